"""The "DreamFusion" tab of the 3D Viewport sidebar: connection, prompt, progress, jobs, refine, settings."""

import bpy

from . import overlay, scene_update
from .addon_core.job_tracker import format_seconds
from .addon_core.panel_text import progress_job_index, wrap
from .addon_core.session import SESSION
from .properties import HIDDEN_FIELDS, PROMPT_HINT, find_job, selected_job
from .refine import active_source
from .shared.geometry_options import option_knobs
from .shared.jobspec import jobspec_knobs
from .shared.states import ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING

STATUS_ICONS = {"off": "UNLINKED", "starting": "SORTTIME", "connecting": "SORTTIME", "connected": "LINKED",
                "lost": "ERROR", "error": "ERROR"}
JOB_ICONS = {QUEUED: "SORTTIME", RUNNING: "PLAY", FINISHED: "CHECKMARK", FAILED: "ERROR",
             CANCELLED: "X", INTERRUPTED: "PAUSE"}


def _settings(context):
    return context.scene.dreamfusion.settings


def current_job(context):
    """The job the progress box follows: the selected one, else the running one (else a queued one, else the
    newest), so queueing or cancelling a second job does not take the running job's ETA off the panel."""
    state = context.scene.dreamfusion
    index = progress_job_index([job.state for job in state.jobs], state.active_job_index)
    return state.jobs[index] if index >= 0 else None


def _wrapped(layout, context, text: str, icon: str = "NONE", first=None) -> None:
    """A label that may be longer than the sidebar is wide, on as many lines as it needs (a one-line label is
    cut off with "…"); `first` takes the first line (a row with buttons beside it)."""
    region = context.region
    width = region.width if region is not None else 300
    # The effective scale (the preference times the display's DPI): region widths are in real pixels. It reads 0
    # without a window, where the preference stands in.
    prefs = context.preferences
    scale = (prefs.system.ui_scale or prefs.view.ui_scale) if prefs is not None else 1.0
    lines = wrap(text, width - (60 if first is not None else 0), scale)
    (first or layout).label(text=lines[0], icon=icon)
    if len(lines) > 1:
        col = layout.column(align=True)
        for line in lines[1:]:
            col.label(text=line, icon="BLANK1" if icon != "NONE" else "NONE")


def _prompt_field(layout, settings) -> None:
    try:  # the grey hint in the empty field (UILayout.prop's placeholder, Blender 4.1+)
        layout.prop(settings, "prompt", text="", placeholder=PROMPT_HINT)
    except TypeError:  # no placeholders: the hint goes under the field while it is empty
        layout.prop(settings, "prompt", text="", icon="OUTLINER_OB_FONT")
        if not settings.prompt.strip():
            layout.label(text=PROMPT_HINT, icon="INFO")


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DreamFusion"


class VIEW3D_PT_dreamfusion(_Panel, bpy.types.Panel):
    bl_label = "DreamFusion"
    bl_idname = "VIEW3D_PT_dreamfusion"

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        status = SESSION.status()
        row = layout.row(align=True)
        # The whole status, wrapped: an error ("the backend exited (127): …") is what tells the artist what to fix.
        _wrapped(layout, context, status.text, STATUS_ICONS.get(status.state, "INFO"), first=row)
        if SESSION.backend is not None:
            row.operator("dreamfusion.stop_backend", text="", icon="CANCEL")
        elif status.state in ("off", "error", "lost"):
            row.operator("dreamfusion.start_backend", text="", icon="PLAY")
            row.operator("dreamfusion.connect", text="", icon="LINKED")
        if SESSION.notices:
            layout.label(text=SESSION.notices[-1], icon="ERROR")

        _prompt_field(layout, settings)
        row = layout.row(align=True)
        row.prop(settings, "seed")
        state = context.scene.dreamfusion
        row.prop(state, "lock_seed", text="", icon="LOCKED" if state.lock_seed else "UNLOCKED")
        layout.prop(settings, "preset")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("dreamfusion.generate", icon="SHADERFX")
        row.operator("dreamfusion.cancel", text="", icon="CANCEL")

        job = current_job(context)
        if job is not None:
            view = SESSION.tracker.jobs.get(job.job_id)
            text = view.summary() if view is not None else (job.summary or job.state)
            box = layout.box()
            box.label(text=job.prompt or job.job_id, icon=JOB_ICONS.get(job.state, "INFO"))
            if job.state in ACTIVE and hasattr(box, "progress"):  # layout.progress: 4.0+
                fraction = job.step / job.steps if job.steps else 0.0
                box.progress(factor=fraction, type="BAR", text=view.bar_text() if view else text)
                if view is not None and job.state == QUEUED and view.queue_position > 1:
                    box.label(text=view.phase_text(), icon="SORTTIME")  # someone else's job runs first
                elif view is not None and view.detail_text():
                    box.label(text=view.detail_text())
            else:
                box.label(text=f"{job.state}: {text}")
            if view is not None and view.choosing:  # best of N: the artist may pick before the prior chooses
                box.label(text=f"best of {len(view.candidates)}: pick one, or the prior chooses at "
                               f"{view.spec.select_step() if view.spec else '?'} steps", icon="MOD_ARRAY")
                for index in sorted(view.candidates):
                    op = box.operator("dreamfusion.pick_candidate", text=f"Pick {view.candidate_text(index)}")
                    op.job_id, op.candidate = job.job_id, index
            elif view is not None and view.chosen is not None:
                box.label(text=f"best of {len(view.scores)}: {view.candidate_text(view.chosen)}, chosen by the "
                               f"{view.chosen_by}", icon="CHECKMARK")
            if job.reason and job.state in (FAILED, INTERRUPTED):
                box.label(text=job.reason[:120], icon="INFO")
            # The shown job's newest preview (its thumbnail follows every preview), not whichever job sent last.
            if job.thumbnail is not None:
                box.template_icon(icon_value=layout.icon(job.thumbnail), scale=6.0)


class VIEW3D_PT_dreamfusion_jobs(_Panel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "VIEW3D_PT_dreamfusion"

    def draw(self, context):
        layout = self.layout
        state = context.scene.dreamfusion
        layout.template_list("DREAMFUSION_UL_jobs", "", state, "jobs", state, "active_job_index", rows=3)
        row = layout.row(align=True)
        row.operator("dreamfusion.resume", icon="PLAY")
        row.operator("dreamfusion.export", icon="EXPORT")
        row.operator("dreamfusion.remove_job", text="", icon="X")
        row = layout.row(align=True)
        row.operator("dreamfusion.recall", icon="RECOVER_LAST")
        row.operator("dreamfusion.copy_settings", text="", icon="COPYDOWN")
        row.operator("dreamfusion.clear_finished", text="", icon="TRASH")
        job = selected_job(context)
        if job is not None:
            box = layout.box()
            if job.thumbnail is not None:
                box.template_icon(icon_value=layout.icon(job.thumbnail), scale=5.0)
            col = box.column(align=True)
            col.label(text=job.prompt or job.job_id)
            col.label(text=f"seed {job.seed or '?'} · {job.steps} steps · {job.model or '?'}")
            col.label(text=f"{job.state} · {format_seconds(job.elapsed)} taken")
            if job.parent_job:
                col.label(text=f"continues {job.parent_job}", icon="LINKED")
            elif job.source_object:
                col.label(text=f"from the mesh of {job.source_object}", icon="MESH_DATA")


def _mesh_buttons(layout) -> None:
    """The two starts from a mesh: Generate From This Mesh, and Texture This Mesh (the shape locked)."""
    # Two operators, each with its own label: the redo panel titles itself after the operator, not the button.
    layout.operator("dreamfusion.refine_mesh", icon="SHADERFX")
    layout.operator("dreamfusion.texture_mesh", icon="BRUSH_DATA")


class VIEW3D_PT_dreamfusion_refine(_Panel, bpy.types.Panel):
    """Acts on the active object: a result is continued or re-prompted, any other mesh is the start of a job."""

    bl_label = "Refine"
    bl_parent_id = "VIEW3D_PT_dreamfusion"

    def draw(self, context):
        layout = self.layout
        state = context.scene.dreamfusion
        obj = active_source(context)  # hidden or not: a refinement hides its source
        if obj is None or obj.type != "MESH":
            layout.label(text="Select a mesh, or a result, to refine", icon="INFO")
            return
        job_id = obj.get(scene_update.JOB_PROPERTY)
        if job_id:
            _, item = find_job(job_id)
            step = item.step if item is not None else obj.get("dreamfusion_step", 0)
            layout.label(text=f"{obj.name} · step {step}", icon="OUTLINER_OB_MESH")
            row = layout.row(align=True)
            row.prop(state, "refine_steps", text="+ Steps")
            row.prop(state, "refine_lock_geometry", toggle=True,
                     icon="LOCKED" if state.refine_lock_geometry else "UNLOCKED")
            row = layout.row(align=True)
            row.scale_y = 1.2
            row.operator("dreamfusion.continue_job", icon="PLAY")
            row.operator("dreamfusion.reprompt", icon="OUTLINER_OB_FONT")
            prompt = state.settings.prompt.strip()
            layout.label(text=f"Re-prompt with “{prompt[:40]}”" if prompt else "Re-prompt: type a prompt above")
            return
        layout.label(text=obj.name, icon="OUTLINER_OB_MESH")
        col = layout.column(align=True)
        col.scale_y = 1.2
        _mesh_buttons(col)
        layout.label(text="Uses the prompt and settings above")


class DREAMFUSION_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        if item.thumbnail is not None:
            row.label(text=item.prompt or item.job_id, icon_value=layout.icon(item.thumbnail))
        else:
            row.label(text=item.prompt or item.job_id, icon=JOB_ICONS.get(item.state, "INFO"))
        row.label(text=f"{item.step}/{item.steps}" if item.state == RUNNING else item.state)


#: Sub-panels that carry a viewport-overlay toggle (a scene property of that name).
OVERLAY_TOGGLES = {"camera": "overlay_cameras", "light": "overlay_lights"}


#: A geometry's own option -> that geometry: the Optimiser panel shows the chosen geometry's options only.
OPTION_OWNERS = {name: geometry for name, (geometry, _) in option_knobs().items()}

#: Fields the main panel shows itself (the prompt, and the seed with its lock).
MAIN_PANEL_FIELDS = ("prompt", "seed")


def _group_panel(group: str, label: str):
    names = [name for name, knob in jobspec_knobs().items()
             if knob.group == group and name not in (*HIDDEN_FIELDS, *MAIN_PANEL_FIELDS)]
    toggle = OVERLAY_TOGGLES.get(group)

    def draw(self, context):
        layout = self.layout
        if toggle:
            state = context.scene.dreamfusion
            row = layout.row(align=True)
            shown = getattr(state, toggle)
            row.prop(state, toggle, toggle=True, icon="HIDE_OFF" if shown else "HIDE_ON")
            row.prop(state, "overlay_while_running", text="", icon="PLAY")
            if shown:
                why = overlay.hidden_reason(context.scene)
                if why:  # the toggle is on and nothing is drawn: say why, and what brings it back
                    _wrapped(layout, context, why, "INFO")
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = _settings(context)
        for name in names:
            if OPTION_OWNERS.get(name, settings.geometry) == settings.geometry:  # another geometry's option: moot
                layout.prop(settings, name)

    return type(f"VIEW3D_PT_dreamfusion_{group}", (_Panel, bpy.types.Panel), {
        "bl_label": label, "bl_parent_id": "VIEW3D_PT_dreamfusion", "bl_options": {"DEFAULT_CLOSED"}, "draw": draw})


_GROUP_PANELS = tuple(_group_panel(group, label) for group, label in (
    ("prompt", "Negative Prompt, Steps & Best of N"), ("camera", "Camera"), ("light", "Light & Shading"),
    ("guidance", "Guidance"), ("optimiser", "Optimiser"), ("output", "Output")))

class VIEW3D_MT_dreamfusion(bpy.types.Menu):
    """Object ▸ DreamFusion: every operator in a menu, so F3 search finds them by name."""

    bl_label = "DreamFusion"
    bl_idname = "VIEW3D_MT_dreamfusion"

    def draw(self, context):
        layout = self.layout
        layout.operator("dreamfusion.generate", icon="SHADERFX")
        layout.operator("dreamfusion.cancel", icon="CANCEL")
        layout.operator("dreamfusion.resume", icon="PLAY")
        layout.separator()
        _mesh_buttons(layout)
        layout.operator("dreamfusion.continue_job", icon="PLAY")
        layout.operator("dreamfusion.reprompt", icon="OUTLINER_OB_FONT")
        layout.separator()
        layout.operator("dreamfusion.recall", icon="RECOVER_LAST")
        layout.operator("dreamfusion.copy_settings", icon="COPYDOWN")
        layout.operator("dreamfusion.export", icon="EXPORT")
        layout.operator("dreamfusion.remove_job", icon="X")
        layout.operator("dreamfusion.clear_finished", icon="TRASH")
        layout.separator()
        layout.operator("dreamfusion.start_backend", icon="PLAY")
        layout.operator("dreamfusion.connect", icon="LINKED")
        layout.operator("dreamfusion.stop_backend", icon="CANCEL")


def _object_menu(self, context):
    self.layout.menu(VIEW3D_MT_dreamfusion.bl_idname)


_classes = (VIEW3D_PT_dreamfusion, DREAMFUSION_UL_jobs, VIEW3D_PT_dreamfusion_jobs, VIEW3D_PT_dreamfusion_refine,
            *_GROUP_PANELS, VIEW3D_MT_dreamfusion)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def register() -> None:
    _register_classes()
    bpy.types.VIEW3D_MT_object.append(_object_menu)


def unregister() -> None:
    bpy.types.VIEW3D_MT_object.remove(_object_menu)
    _unregister_classes()
