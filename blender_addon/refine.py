"""Refine operators: start from the active mesh (Generate From This Mesh, Texture This Mesh), or continue and
re-prompt a result.

Each makes a new object at once, at its source's place (a copy of the source's evaluated mesh, so it shows the
start until the first mesh streams in) and sends a new job; the source is only hidden in the viewport, so
there is one surface to look at, and Undo takes the new object away again. A hidden source stays usable: made
active again (in the outliner), it is what the buttons act on, although the 3D view then reports no active
object (it leaves hidden ones out of `context.active_object`). The specs and frames are
`addon_core/refine.py`'s; the streamed meshes go into the new object through the client loop like any job's.
"""

from __future__ import annotations

import json
import uuid

import bpy

from . import operators, preferences, scene_update
from .addon_core.refine import IDENTITY, RefineTarget, continue_spec, flat_matrix, is_frame, mesh_spec
from .mesh_source import world_mesh_with_uvs
from .properties import adopt_default_model, find_job, show_seed, spec_values, with_next_seed
from .shared.errors import ProtocolError, SpecError
from .shared.jobspec import JobSpec
from .shared.mesh import MAX_INIT_TRIANGLES
from .shared.states import ACTIVE


def _has_scene_settings(context) -> bool:
    return context.scene is not None and hasattr(context.scene, "dreamfusion")


def active_source(context):
    """The object the Refine buttons act on: the active object, hidden or not.

    In the 3D view `context.active_object` is None while the active object is hidden, and every refinement
    hides its source: without the view layer's own active object (what the outliner shows as active), a source
    clicked again in the outliner could not be refined a second time ("no active object")."""
    obj = context.active_object
    if obj is not None:
        return obj
    view_layer = context.view_layer
    return view_layer.objects.active if view_layer is not None else None


def _refuse(op, text: str) -> set:
    op.report({"ERROR"}, f"DreamFusion: {text}")
    return {"CANCELLED"}


def _send(op, context, spec: JobSpec, source, target: RefineTarget, init_mesh=None, colors=None,
          init_uvs=None) -> set:
    """Send the refinement and make its object; the source is hidden, and the new object selected and active
    (so Continue then acts on it)."""
    sent = operators.submit_job(op, context, spec, init_mesh, target, init_uvs)
    if sent is None:
        return {"CANCELLED"}
    properties = {scene_update.PENDING_PROPERTY: target.token}
    if target.parent_job:
        properties[scene_update.PARENT_PROPERTY] = target.parent_job
    if target.source_object:
        properties[scene_update.SOURCE_PROPERTY] = target.source_object
    if target.frame != IDENTITY:
        properties[scene_update.FRAME_PROPERTY] = list(target.frame)
    if target.keep_geometry:
        properties[scene_update.KEEP_PROPERTY] = True
    obj = scene_update.new_refined_object(context.scene, spec.prompt, source, context.evaluated_depsgraph_get(),
                                          properties, colors)
    view_layer = context.view_layer
    for other in view_layer.objects:
        if other.select_get():
            other.select_set(False)
    source.hide_set(True)
    obj.select_set(True)
    view_layer.objects.active = obj
    when = "once the backend is up" if sent == "held" else "sent"
    op.report({"INFO"}, f"DreamFusion: '{spec.prompt}' ({spec.steps} steps) {when} into {obj.name!r}; "
                        f"{source.name!r} is hidden (Alt H shows it)")
    return {"FINISHED"}


class _FromMesh:
    """What Generate From This Mesh and Texture This Mesh share: two operators rather than one with a switch, so
    each redo panel carries its own title (Blender titles it after the operator, never after the button)."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _has_scene_settings(context)

    def _locked(self) -> bool:
        raise NotImplementedError

    def execute(self, context):
        lock = self._locked()
        obj = active_source(context)
        if obj is None:
            return _refuse(self, "no active object: select the mesh to start from")
        if obj.type != "MESH":
            return _refuse(self, f"{obj.name!r} is a {obj.type.lower()}, not a mesh: select a mesh object")
        try:
            mesh, uvs = world_mesh_with_uvs([obj], context.evaluated_depsgraph_get(),
                                            field=f"the mesh of {obj.name!r}")
        except ProtocolError as exc:  # empty, too many triangles, or flat to a point: nothing is sent
            return _refuse(self, str(exc))
        state = context.scene.dreamfusion
        settings = state.settings
        if adopt_default_model(settings, preferences.get(context).default_model):
            self.report({"INFO"}, f"DreamFusion: using the default model {settings.model} (see Guidance)")
        try:
            spec = mesh_spec(with_next_seed(state, spec_values(settings)), lock)
        except SpecError as exc:
            return _refuse(self, str(exc))
        target = RefineTarget(token=uuid.uuid4().hex, frame=flat_matrix(obj.matrix_world), source_object=obj.name,
                              keep_geometry=lock, hidden_object=obj.name)
        # Its own UVs go along when the shape is kept: a texture is then baked into them.
        done = _send(self, context, spec, obj, target, init_mesh=mesh, colors=mesh.colors,
                     init_uvs=uvs if lock else None)
        if done == {"FINISHED"}:
            show_seed(state, spec.seed)
        return done


class DREAMFUSION_OT_refine_mesh(_FromMesh, bpy.types.Operator):
    bl_idname = "dreamfusion.refine_mesh"
    bl_label = "Generate From This Mesh"
    bl_description = ("Start a new job from the active object's mesh (modifiers applied, in world space, at most "
                      f"{MAX_INIT_TRIANGLES:,} triangles) with the panel's prompt and settings; the result is a new "
                      "object in its place")

    #: Kept for scripts written against the one operator there was; hidden, so that the redo panel offers no
    #: switch that would make it texture under the title "Generate From This Mesh".
    lock_geometry: bpy.props.BoolProperty(
        name="Lock Geometry", default=False, options={"HIDDEN", "SKIP_SAVE"},
        description="Texture only: keep this very mesh and optimise its colours (what Texture This Mesh does)")

    def _locked(self) -> bool:
        return self.lock_geometry


class DREAMFUSION_OT_texture_mesh(_FromMesh, bpy.types.Operator):
    bl_idname = "dreamfusion.texture_mesh"
    bl_label = "Texture This Mesh"
    bl_description = ("Texture the active object's mesh with the panel's prompt: its geometry stays exactly as it is "
                      f"(at most {MAX_INIT_TRIANGLES:,} triangles), only its colours are optimised, on a new object "
                      "in its place")

    def _locked(self) -> bool:
        return True


def _continue(op, context, prompt: str | None = None) -> set:
    """Continue (or, with `prompt`, re-prompt) the active result from its job's checkpoint."""
    obj = active_source(context)
    if obj is None:
        return _refuse(op, "no active object: select a DreamFusion result to continue")
    job_id = obj.get(scene_update.JOB_PROPERTY)
    if not job_id or obj.type != "MESH":
        return _refuse(op, f"{obj.name!r} is not a DreamFusion result: use Generate From This Mesh to start from it")
    _, item = find_job(job_id)
    if item is not None and item.state in ACTIVE:
        return _refuse(op, f"job {job_id} is still {item.state}: cancel it or wait until it ends")
    saved = (item.spec_json if item is not None else "") or obj.get("dreamfusion_spec", "")
    try:
        parent = JobSpec.from_dict(json.loads(saved))
    except (ValueError, SpecError) as exc:
        return _refuse(op, f"{obj.name!r} carries no readable settings of job {job_id}: {exc}")
    step = item.step if item is not None and item.step else int(obj.get("dreamfusion_step", 0))
    state = context.scene.dreamfusion
    try:
        spec = continue_spec(parent, job_id, step, state.refine_steps, state.refine_lock_geometry, prompt)
    except SpecError as exc:
        return _refuse(op, str(exc))
    stored = obj.get(scene_update.FRAME_PROPERTY)
    frame = tuple(float(v) for v in stored) if stored is not None and is_frame(stored) else IDENTITY
    keep = bool(obj.get(scene_update.KEEP_PROPERTY, False))
    target = RefineTarget(token=uuid.uuid4().hex, frame=frame, parent_job=job_id, keep_geometry=keep,
                          hidden_object=obj.name)
    return _send(op, context, spec, obj, target)


class DREAMFUSION_OT_continue_job(bpy.types.Operator):
    bl_idname = "dreamfusion.continue_job"
    bl_label = "Continue"
    bl_description = ("Continue the active result's job from its checkpoint for the Refine panel's extra steps, "
                      "as a new object in its place (any finished, cancelled or interrupted job)")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _has_scene_settings(context)

    def execute(self, context):
        return _continue(self, context)


class DREAMFUSION_OT_reprompt(bpy.types.Operator):
    bl_idname = "dreamfusion.reprompt"
    bl_label = "Re-prompt"
    bl_description = ("Continue the active result's job from its checkpoint with the panel's prompt instead of its "
                      "own, for the Refine panel's extra steps, as a new object in its place")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _has_scene_settings(context)

    def execute(self, context):
        return _continue(self, context, prompt=context.scene.dreamfusion.settings.prompt)


_classes = (DREAMFUSION_OT_refine_mesh, DREAMFUSION_OT_texture_mesh, DREAMFUSION_OT_continue_job,
            DREAMFUSION_OT_reprompt)


register, unregister = bpy.utils.register_classes_factory(_classes)
