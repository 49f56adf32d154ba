"""The scene's generation history: every job keeps its settings, time taken and a thumbnail (its newest preview,
packed into the .blend), and can be recalled into the panel, copied as JSON, or cleared once done."""

from __future__ import annotations

import json

import bpy
import numpy as np

from .properties import HIDDEN_FIELDS, INT_MAX, selected_job, to_panel
from .shared.errors import SpecError
from .shared.jobspec import JobSpec
from .shared.states import TERMINAL

THUMBNAIL_PREFIX = "DreamFusion "
THUMBNAIL_SIDE = 128
#: The Jobs list's row icon (Blender's icon previews are 32 pixels a side at most).
ICON_SIDE = 32


def record_spec(item, spec: JobSpec | None) -> None:
    """Keep the job's whole JobSpec on its list entry (what Recall and Copy Settings read)."""
    if spec is None:
        return
    item.spec_json = json.dumps(spec.to_dict(), sort_keys=True)
    item.model, item.seed = spec.model, str(spec.seed)
    item.steps = item.steps or spec.steps


def blender_rgba(pixels: np.ndarray) -> np.ndarray:
    """Preview pixels (uint8 sRGB, H x W x 3, row 0 at the top) as the flat float RGBA Blender's image and
    icon buffers take (rows from the bottom, opaque)."""
    h, w = pixels.shape[:2]
    rgba = np.empty((h, w, 4), np.float32)
    rgba[..., :3] = pixels[::-1] / 255.0
    rgba[..., 3] = 1.0
    return rgba.ravel()


def store_thumbnail(item, pixels: np.ndarray) -> None:
    """The job's newest preview (uint8 sRGB, H x W x 3, row 0 at the top) as its thumbnail image, one per job,
    rewritten in place. At most THUMBNAIL_SIDE pixels a side (a remote backend may send big previews), and
    packed only when the .blend is saved (`_pack_thumbnails`): an update costs a pixel copy, not a PNG encode."""
    pixels = _downsampled(pixels, THUMBNAIL_SIDE)
    h, w = pixels.shape[:2]
    image = item.thumbnail
    if image is None or tuple(image.size) != (w, h):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(THUMBNAIL_PREFIX + (item.job_id or "job"), w, h, alpha=False)
        image.colorspace_settings.name = "sRGB"
        item.thumbnail = image
    rgba = blender_rgba(pixels)
    image.pixels.foreach_set(rgba)
    _set_preview(image, pixels, rgba)


def _downsampled(pixels: np.ndarray, side: int) -> np.ndarray:
    step = max(1, -(-max(pixels.shape[:2]) // side))
    return pixels[::step, ::step]


def _set_preview(image, pixels: np.ndarray, rgba: np.ndarray) -> None:
    """Write the pixels into the image's own preview too: that is what the Jobs list and the progress box draw
    (`layout.icon(image)`), and Blender renders an image's preview once, from the pixels of the moment, and
    never again when they change, so without this the thumbnail shows the first preview until the job ends.
    Written pixels also keep Blender from re-rendering it. The list's small icon gets the same picture, smaller."""
    preview = image.preview_ensure()
    h, w = pixels.shape[:2]
    preview.image_size = (w, h)  # setting a size marks the preview changed, so the icon is rebuilt
    preview.image_pixels_float.foreach_set(rgba)
    small = _downsampled(pixels, ICON_SIDE)
    preview.icon_size = (small.shape[1], small.shape[0])
    preview.icon_pixels_float.foreach_set(blender_rgba(small))


@bpy.app.handlers.persistent
def _pack_thumbnails(*_args) -> None:
    """Before a save: pack the thumbnails changed since the last one, so they are kept in the .blend."""
    for image in bpy.data.images:
        if image.name.startswith(THUMBNAIL_PREFIX) and (image.is_dirty or image.packed_file is None):
            image.pack()


def settings_text(item) -> str:
    """What Copy Settings puts on the clipboard: the job's JobSpec as indented JSON."""
    return json.dumps(json.loads(item.spec_json), indent=2, sort_keys=True)


def _selected_with_settings(context):
    """The selected job when it carries its JobSpec (what Recall and Copy Settings need), else None."""
    job = selected_job(context)
    return job if job is not None and job.spec_json else None


def recall_into(settings, values: dict) -> list[str]:
    """Put a JobSpec dict's values into the panel's settings; returns notes on what the panel cannot hold."""
    notes = []
    settings.preset = "CUSTOM"
    # The model first: choosing one applies its recommendations, which the job's own values override.
    settings.model = values["model"]
    for name, value in values.items():
        if name in HIDDEN_FIELDS or name == "model" or not hasattr(settings, name):
            continue
        if name == "seed" and value > INT_MAX:
            notes.append(f"seed {value} is above the panel's largest ({INT_MAX}); kept {INT_MAX}")
            value = INT_MAX
        setattr(settings, name, to_panel(name, value))
    # Where a job started and whether it kept its shape are the Refine buttons' to decide, not a setting.
    hidden = [f"{name}={values[name]!r}" for name in HIDDEN_FIELDS
              if values.get(name) is not False and values.get(name) not in (None, "", "blob")]
    if hidden:
        notes.append("not in the panel: " + ", ".join(hidden))
    return notes


class DREAMFUSION_OT_recall(bpy.types.Operator):
    bl_idname = "dreamfusion.recall"
    bl_label = "Recall Settings"
    bl_description = ("Put the selected job's whole settings (prompt, seed, model and every knob) back into the "
                      "panel, to run it again or vary it")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _selected_with_settings(context) is not None

    def execute(self, context):
        job = _selected_with_settings(context)
        try:
            values = JobSpec.from_dict(json.loads(job.spec_json)).to_dict()
        except (ValueError, SpecError) as exc:
            self.report({"ERROR"}, f"DreamFusion: this job's saved settings cannot be read: {exc}")
            return {"CANCELLED"}
        state = context.scene.dreamfusion
        notes = recall_into(state.settings, values)
        # Recalled to run it again (or to vary one setting): its seed must be the one sent, not a fresh draw.
        state.lock_seed = True
        for note in notes:
            self.report({"WARNING"}, f"DreamFusion: {note}")
        self.report({"INFO"}, f"DreamFusion: recalled the settings of '{values['prompt']}' (seed {values['seed']}, "
                              "locked)")
        return {"FINISHED"}


class DREAMFUSION_OT_copy_settings(bpy.types.Operator):
    bl_idname = "dreamfusion.copy_settings"
    bl_label = "Copy Settings"
    bl_description = ("Copy the selected job's whole JobSpec to the clipboard as JSON (a row of a .json or "
                      ".jsonl batch prompt file takes exactly this)")
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _selected_with_settings(context) is not None

    def execute(self, context):
        job = _selected_with_settings(context)
        context.window_manager.clipboard = settings_text(job)
        self.report({"INFO"}, f"DreamFusion: copied the settings of '{job.prompt}' to the clipboard")
        return {"FINISHED"}


class DREAMFUSION_OT_clear_finished(bpy.types.Operator):
    bl_idname = "dreamfusion.clear_finished"
    bl_label = "Clear Finished Jobs"
    bl_description = ("Take every finished, failed and cancelled job off this scene's list (their objects stay in "
                      "the scene; running, queued and interrupted jobs stay listed)")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        state = getattr(context.scene, "dreamfusion", None)
        return state is not None and any(item.state in TERMINAL for item in state.jobs)

    def execute(self, context):
        state = context.scene.dreamfusion
        done = [i for i, item in enumerate(state.jobs) if item.state in TERMINAL]
        for index in reversed(done):
            thumbnail = state.jobs[index].thumbnail
            state.jobs.remove(index)
            if thumbnail is not None and thumbnail.users == 0:
                bpy.data.images.remove(thumbnail)
        state.active_job_index = min(state.active_job_index, len(state.jobs) - 1)
        self.report({"INFO"}, f"DreamFusion: cleared {len(done)} finished job(s) from the list")
        return {"FINISHED"}


_classes = (DREAMFUSION_OT_recall, DREAMFUSION_OT_copy_settings, DREAMFUSION_OT_clear_finished)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def register() -> None:
    _register_classes()
    bpy.app.handlers.save_pre.append(_pack_thumbnails)


def unregister() -> None:
    if _pack_thumbnails in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_pack_thumbnails)
    _unregister_classes()
