"""The "DreamFusion" tab of the 3D Viewport sidebar: connection, prompt, progress, settings, jobs."""

import bpy

from . import client_loop
from .properties import HIDDEN_FIELDS
from .session import SESSION
from .shared.jobspec import jobspec_knobs

STATUS_ICONS = {"off": "UNLINKED", "starting": "SORTTIME", "connecting": "SORTTIME", "connected": "LINKED",
                "lost": "ERROR", "error": "ERROR"}
JOB_ICONS = {"queued": "SORTTIME", "running": "PLAY", "finished": "CHECKMARK", "failed": "ERROR",
             "cancelled": "X", "interrupted": "PAUSE"}


def _settings(context):
    return context.scene.dreamfusion.settings


def _current_job(context):
    """The job the progress bar follows: the selected one, else the newest."""
    state = context.scene.dreamfusion
    if 0 <= state.active_job_index < len(state.jobs):
        return state.jobs[state.active_job_index]
    return state.jobs[-1] if len(state.jobs) else None


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
        row.label(text=status.text, icon=STATUS_ICONS.get(status.state, "INFO"))
        if SESSION.backend is not None:
            row.operator("dreamfusion.stop_backend", text="", icon="CANCEL")
        elif status.state in ("off", "error", "lost"):
            row.operator("dreamfusion.start_backend", text="", icon="PLAY")
            row.operator("dreamfusion.connect", text="", icon="LINKED")
        if SESSION.notices:
            layout.label(text=SESSION.notices[-1], icon="ERROR")

        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "preset")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("dreamfusion.generate", icon="SHADERFX")
        row.operator("dreamfusion.cancel", text="", icon="CANCEL")

        job = _current_job(context)
        if job is not None:
            view = SESSION.tracker.jobs.get(job.job_id)
            text = view.summary() if view is not None else (job.summary or job.state)
            box = layout.box()
            box.label(text=job.prompt or job.job_id, icon=JOB_ICONS.get(job.state, "INFO"))
            if job.state in ("queued", "running") and hasattr(box, "progress"):  # layout.progress: 4.0+
                fraction = job.step / job.steps if job.steps else 0.0
                box.progress(factor=fraction, type="BAR", text=view.bar_text() if view else text)
                if view is not None and view.detail_text():
                    box.label(text=view.detail_text())
            else:
                box.label(text=f"{job.state}: {text}")
            if job.reason and job.state in ("failed", "interrupted"):
                box.label(text=job.reason[:120], icon="INFO")
            icon = client_loop.preview_icon()
            if icon:
                box.template_icon(icon_value=icon, scale=6.0)


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


class DREAMFUSION_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.label(text=item.prompt or item.job_id, icon=JOB_ICONS.get(item.state, "INFO"))
        row.label(text=f"{item.step}/{item.steps}" if item.state == "running" else item.state)


def _group_panel(group: str, label: str):
    names = [name for name, knob in jobspec_knobs().items() if knob.group == group and name not in (*HIDDEN_FIELDS, "prompt")]

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        for name in names:
            layout.prop(_settings(context), name)

    return type(f"VIEW3D_PT_dreamfusion_{group}", (_Panel, bpy.types.Panel), {
        "bl_label": label, "bl_parent_id": "VIEW3D_PT_dreamfusion", "bl_options": {"DEFAULT_CLOSED"}, "draw": draw})


_GROUP_PANELS = tuple(_group_panel(group, label) for group, label in (
    ("prompt", "Prompt & Seed"), ("camera", "Camera"), ("light", "Light & Shading"),
    ("guidance", "Guidance"), ("optimiser", "Optimiser"), ("output", "Output")))

_classes = (VIEW3D_PT_dreamfusion, DREAMFUSION_UL_jobs, VIEW3D_PT_dreamfusion_jobs, *_GROUP_PANELS)


register, unregister = bpy.utils.register_classes_factory(_classes)
