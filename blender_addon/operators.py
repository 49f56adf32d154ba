"""Operators: generate, cancel, resume, start/stop/connect the backend, export a result (refinements: refine.py)."""

from __future__ import annotations

import os

import bpy

from . import client_loop, preferences, scene_update
from .addon_core.local_backend import LocalBackendError, split_folders
from .addon_core.session import SESSION, PendingSubmit
from .properties import EMPTY_PROMPT, adopt_default_model, selected_job, show_seed, spec_values, with_next_seed
from .shared.client import BackendTimeout
from .shared.errors import SpecError
from .shared.jobspec import JobSpec, model_source
from .shared.states import INTERRUPTED


def _ensure_backend(op, context) -> bool:
    """Start or connect per the preferences if nothing is connected yet; False (reported) if that failed."""
    if SESSION.client is not None or SESSION.backend is not None:
        return True
    prefs = preferences.get(context)
    try:
        if prefs.backend_mode == "LOCAL":
            _start_local(prefs, context)
        else:
            _connect_remote(prefs)
    except (LocalBackendError, ValueError, BackendTimeout) as exc:
        op.report({"ERROR"}, f"DreamFusion: {exc}")
        return False
    client_loop.start()
    return True


def _send(op, command, *args) -> bool:
    """Run a SESSION command; False (reported to the user) when the backend cannot be reached."""
    try:
        command(*args)
    except BackendTimeout as exc:
        op.report({"ERROR"}, f"DreamFusion: {exc}")
        return False
    return True


def submit_job(op, context, spec: JobSpec, init_mesh=None, target=None, init_uvs=None) -> str | None:
    """Send a validated job as Generate does: start or connect to the backend per the preferences, or queue the
    job while a local backend starts. Returns "sent" or "held" (until the backend listens), or None (reported to
    the user) when it cannot go out."""
    prefs = preferences.get(context)
    if prefs.backend_mode == "LOCAL" and not prefs.start_on_generate and SESSION.client is None:
        op.report({"ERROR"}, "DreamFusion: the backend is not running; press Start Backend")
        return None
    if not _ensure_backend(op, context):
        return None
    if SESSION.client is None:
        # A local backend is still starting: queue the job and send it once it listens.
        SESSION.pending_submits.append(PendingSubmit(spec, context.scene.name, init_mesh, target, init_uvs))
        return "held"
    if not _send(op, SESSION.submit, spec, context.scene.name, init_mesh, target, init_uvs):
        return None
    return "sent"


def _start_local(prefs, context) -> None:
    # The backend loads local models only from folders it is told about: the preferences' and this scene's.
    settings = getattr(getattr(context.scene, "dreamfusion", None), "settings", None)
    models = [prefs.default_model, getattr(settings, "model", "")]
    allowed = [bpy.path.abspath(p) for p in split_folders(prefs.model_folders)]
    allowed += [bpy.path.abspath(m) for m in models if m and model_source(m) == "local"]
    SESSION.start_local(bpy.path.abspath(prefs.backend_executable), prefs.device, bpy.path.abspath(prefs.data_dir),
                        allow_paths=allowed)


def _connect_remote(prefs) -> None:
    SESSION.connect(prefs.address, bpy.path.abspath(prefs.server_key), bpy.path.abspath(prefs.client_secret_key))


def _cancellable(context):
    """The selected job if it is still running or queued, else the newest one that is."""
    job = selected_job(context)
    if job is not None and job.active:
        return job
    return next((j for j in reversed(context.scene.dreamfusion.jobs) if j.active), None)


class DREAMFUSION_OT_generate(bpy.types.Operator):
    bl_idname = "dreamfusion.generate"
    bl_label = "Generate"
    bl_description = "Send the prompt and settings to the backend and stream the mesh into the scene"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "dreamfusion")

    def execute(self, context):
        state = context.scene.dreamfusion
        settings = state.settings
        if not settings.prompt.strip():
            self.report({"ERROR"}, f"DreamFusion: {EMPTY_PROMPT}")
            return {"CANCELLED"}
        prefs = preferences.get(context)
        if adopt_default_model(settings, prefs.default_model):
            self.report({"INFO"}, f"DreamFusion: using the default model {settings.model} (see Guidance)")
        try:
            spec = JobSpec.from_dict(with_next_seed(state, spec_values(settings)))
        except SpecError as exc:
            self.report({"ERROR"}, f"DreamFusion: {exc}")  # names the field and the allowed range; nothing sent
            return {"CANCELLED"}
        sent = submit_job(self, context, spec)
        if sent is None:
            return {"CANCELLED"}
        show_seed(state, spec.seed)
        if sent == "held":
            self.report({"INFO"}, f"DreamFusion: starting the backend; the job (seed {spec.seed}) is sent when it "
                                  "is up")
        else:
            self.report({"INFO"}, f"DreamFusion: sent '{spec.prompt}' ({spec.steps} steps, seed {spec.seed}, "
                                  f"model {spec.model})")
        return {"FINISHED"}


class DREAMFUSION_OT_cancel(bpy.types.Operator):
    bl_idname = "dreamfusion.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the selected job after its current step; its latest mesh stays in the scene"
    bl_options = {"REGISTER"}

    job_id: bpy.props.StringProperty(name="Job ID", description="Job to cancel (default: the selected one)")

    @classmethod
    def poll(cls, context):
        return SESSION.client is not None and _cancellable(context) is not None

    def execute(self, context):
        job_id = self.job_id or _cancellable(context).job_id
        if not _send(self, SESSION.cancel, job_id):
            return {"CANCELLED"}
        self.report({"INFO"}, f"DreamFusion: cancelling {job_id}")
        return {"FINISHED"}


class DREAMFUSION_OT_pick_candidate(bpy.types.Operator):
    bl_idname = "dreamfusion.pick_candidate"
    bl_label = "Pick Candidate"
    bl_description = ("Best of N: keep this candidate and train it alone to the end (the others stop), instead of "
                      "the one the prior would choose")
    bl_options = {"REGISTER"}

    job_id: bpy.props.StringProperty(name="Job ID")
    candidate: bpy.props.IntProperty(name="Candidate", min=0)

    @classmethod
    def poll(cls, context):
        return SESSION.connected

    def execute(self, context):
        view = SESSION.tracker.jobs.get(self.job_id)
        if view is None or not view.choosing:
            self.report({"ERROR"}, f"DreamFusion: job {self.job_id} has no candidates to pick from now")
            return {"CANCELLED"}
        if not _send(self, SESSION.pick, self.job_id, self.candidate):
            return {"CANCELLED"}
        self.report({"INFO"}, f"DreamFusion: picked {view.candidate_text(self.candidate)}")
        return {"FINISHED"}


class DREAMFUSION_OT_resume(bpy.types.Operator):
    bl_idname = "dreamfusion.resume"
    bl_label = "Resume"
    bl_description = "Continue an interrupted job from its last checkpoint"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        job = selected_job(context)
        return SESSION.connected and job is not None and job.state == INTERRUPTED

    def execute(self, context):
        return {"FINISHED"} if _send(self, SESSION.resume, selected_job(context).job_id) else {"CANCELLED"}


class DREAMFUSION_OT_start_backend(bpy.types.Operator):
    bl_idname = "dreamfusion.start_backend"
    bl_label = "Start Backend"
    bl_description = "Launch dreamfusion-backend on this machine (loopback only), as set in the preferences"

    @classmethod
    def poll(cls, context):
        return SESSION.backend is None or not SESSION.backend.running

    def execute(self, context):
        try:
            _start_local(preferences.get(context), context)
        except LocalBackendError as exc:
            self.report({"ERROR"}, f"DreamFusion: {exc}")
            return {"CANCELLED"}
        client_loop.start()
        self.report({"INFO"}, "DreamFusion: starting the local backend")
        return {"FINISHED"}


class DREAMFUSION_OT_stop_backend(bpy.types.Operator):
    bl_idname = "dreamfusion.stop_backend"
    bl_label = "Stop Backend"
    bl_description = "Stop the backend this Blender started (running jobs are checkpointed as interrupted)"

    @classmethod
    def poll(cls, context):
        return SESSION.backend is not None

    def execute(self, context):
        SESSION.stop_backend()
        self.report({"INFO"}, "DreamFusion: backend stopped")
        return {"FINISHED"}


class DREAMFUSION_OT_connect(bpy.types.Operator):
    bl_idname = "dreamfusion.connect"
    bl_label = "Connect"
    bl_description = "Connect to the remote backend set in the preferences"

    @classmethod
    def poll(cls, context):
        return SESSION.backend is None  # a backend we launched is connected to by itself

    def execute(self, context):
        prefs = preferences.get(context)
        try:
            _connect_remote(prefs)
        except (ValueError, BackendTimeout) as exc:
            self.report({"ERROR"}, f"DreamFusion: {exc}")
            return {"CANCELLED"}
        client_loop.start()
        self.report({"INFO"}, f"DreamFusion: connecting to {prefs.address}")
        return {"FINISHED"}


class DREAMFUSION_OT_export(bpy.types.Operator):
    bl_idname = "dreamfusion.export"
    bl_label = "Export .glb"
    bl_description = ("Write the selected job's object (hidden or not, selected or not) with its texture or vertex "
                      "colours to a glTF binary file")

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.glb", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        job = selected_job(context)
        return job is not None and job.object is not None

    def invoke(self, context, event):
        job = selected_job(context)
        self.filepath = bpy.path.clean_name(job.object.name) + ".glb"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        job = selected_job(context)
        path = bpy.path.abspath(self.filepath)
        if not path.lower().endswith(".glb"):
            path += ".glb"
        try:
            vertices = scene_update.export_glb(context, job.object, path)
        except RuntimeError as exc:
            self.report({"ERROR"}, f"DreamFusion: export failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"DreamFusion: wrote {os.path.basename(path)} ({vertices:,} vertices)")
        return {"FINISHED"}


class DREAMFUSION_OT_remove_job(bpy.types.Operator):
    bl_idname = "dreamfusion.remove_job"
    bl_label = "Remove Job"
    bl_description = ("Take the selected job off this list (its object stays in the scene); optionally delete it "
                      "and its files on the backend as well, cancelling it first if it still runs")
    bl_options = {"REGISTER", "UNDO"}

    delete_on_backend: bpy.props.BoolProperty(
        name="Delete on the backend", default=False,
        description="Also remove the job's checkpoint, mesh and files from the backend's disk (cannot be undone)")

    @classmethod
    def poll(cls, context):
        return selected_job(context) is not None

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        state = context.scene.dreamfusion
        job = selected_job(context)
        job_id = job.job_id
        if self.delete_on_backend and job_id:
            if not SESSION.connected:
                self.report({"ERROR"}, "DreamFusion: not connected to the backend; the job was not deleted there")
                return {"CANCELLED"}
            if not _send(self, SESSION.delete, job_id):
                return {"CANCELLED"}
        state.jobs.remove(state.active_job_index)
        state.active_job_index = min(state.active_job_index, len(state.jobs) - 1)
        where = " and deleting it on the backend" if self.delete_on_backend and job_id else ""
        self.report({"INFO"}, f"DreamFusion: removed job {job_id or '(not sent)'} from the list{where}")
        return {"FINISHED"}


_classes = (DREAMFUSION_OT_generate, DREAMFUSION_OT_cancel, DREAMFUSION_OT_pick_candidate, DREAMFUSION_OT_resume,
            DREAMFUSION_OT_start_backend, DREAMFUSION_OT_stop_backend, DREAMFUSION_OT_connect, DREAMFUSION_OT_export,
            DREAMFUSION_OT_remove_job)


register, unregister = bpy.utils.register_classes_factory(_classes)
