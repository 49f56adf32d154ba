"""Scene settings mirroring the JobSpec, built from its knobs, and the scene's job list.

Every property's type, default, min/max and tooltip comes from the same
`Knob` the backend validates against, so the panel cannot offer a value the
protocol refuses (Blender's 32-bit int properties cap the seed below the
protocol's maximum).
"""

import random

import bpy

from .addon_core.refine import IDENTITY
from .overlay import RANGE_FIELDS as OVERLAY_FIELDS
from .shared.geometry_options import every_option_default
from .shared.jobspec import JobSpec, PRESETS, jobspec_knobs
from .shared.recommended import recommendations
from .shared.states import ACTIVE, JOB_STATES, QUEUED

#: JobSpec fields the settings sub-panels do not offer: where a job starts, and whether its shape is kept, are
#: what the Refine sub-panel's buttons decide (Generate always starts from the blob).
HIDDEN_FIELDS = ("init", "init_from", "lock_geometry")
INT_MAX = 2**31 - 1
#: What the empty prompt field shows, and what Generate says when it is still empty.
PROMPT_HINT = "Describe the object, e.g. a ceramic teapot"
EMPTY_PROMPT = "type a prompt first: what to make, e.g. \"a ceramic teapot\" or \"a red sports car\""


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize().replace("Cfg", "CFG").replace("Perp neg", "Perp-Neg")


def _tooltip(knob) -> str:
    return f"{knob.help} (allowed: {knob.allowed()})"


def _defaults() -> dict:
    # (a JobSpec needs a prompt; the panel starts empty). The panel holds every geometry's options.
    values = {**every_option_default(), **JobSpec(prompt="x", seed=0).to_dict()}
    values.update(recommendations(values["model"]))
    values["prompt"] = ""
    return values


def _property(name: str, knob, default):
    common = {"name": _label(name), "description": _tooltip(knob)}
    if name in OVERLAY_FIELDS:  # the viewport overlay draws these: redraw it when one changes
        common["update"] = _redraw_overlay
    if knob.value_type == "text":
        return bpy.props.StringProperty(default=default, maxlen=knob.max_len, **common)
    if knob.value_type == "bool":
        return bpy.props.BoolProperty(default=default, **common)
    if knob.value_type == "choice":
        items = [(c, _label(c), "") for c in knob.choices]
        return bpy.props.EnumProperty(items=items, default=default, **common)
    if knob.value_type == "int" and knob.values:  # a fixed list (texture sizes): a menu, never a typo
        items = [(str(v), f"{v} {knob.unit}".strip() if v else "Off", "") for v in knob.values]
        return bpy.props.EnumProperty(items=items, default=str(default), **common)
    if knob.value_type == "int":
        low, high = int(knob.minimum), int(min(knob.maximum, INT_MAX))
        return bpy.props.IntProperty(default=int(default), min=low, max=high, **common)
    if knob.value_type == "float":
        return bpy.props.FloatProperty(default=float(default), min=knob.minimum, max=knob.maximum, **common)
    if knob.value_type == "range":
        return bpy.props.FloatVectorProperty(size=2, default=tuple(float(v) for v in default), min=knob.minimum,
                                             max=knob.maximum, **common)
    raise AssertionError(f"unhandled knob value type {knob.value_type!r}")


def to_panel(name: str, value):
    """A JobSpec value as the panel's property holds it (a menu of numbers holds strings)."""
    knob = jobspec_knobs().get(name)
    return str(value) if knob is not None and knob.values else value


def _apply_values(settings, values: dict) -> None:
    for name, value in values.items():
        if hasattr(settings, name):
            setattr(settings, name, to_panel(name, value))


def _redraw_overlay(self, context) -> None:
    from .overlay import redraw_viewports
    redraw_viewports()


def _on_preset(self, context) -> None:
    if self.preset != "CUSTOM":
        _apply_values(self, PRESETS[self.preset])


def _on_model(self, context) -> None:
    # Built-in priors only work in the scene they were trained on, and real models have tuned recipes
    # (Stable Diffusion, DeepFloyd IF): switching to one applies its settings.
    _apply_values(self, recommendations(self.model))


def settings_annotations() -> dict:
    defaults = _defaults()
    annotations = {name: _property(name, knob, defaults[name])
                   for name, knob in jobspec_knobs().items() if name not in HIDDEN_FIELDS}
    model = jobspec_knobs()["model"]
    annotations["model"] = bpy.props.StringProperty(
        name="Model", default=defaults["model"], maxlen=model.max_len, update=_on_model,
        description=_tooltip(model) + ". The built-in priors are CPU-sized (coloured shapes; objects with parts "
                                      "and patterns). Choosing one, a Stable Diffusion 1.x/2.x or a DeepFloyd IF "
                                      "model applies its recommended settings")
    annotations["preset"] = bpy.props.EnumProperty(
        name="Preset", default="CUSTOM", update=_on_preset,
        description="Apply a named set of steps / resolutions; edit any value afterwards",
        items=[("CUSTOM", "Custom", "Keep the values below")] +
              [(p, p.capitalize(), ", ".join(f"{k} {v}" for k, v in values.items())) for p, values in PRESETS.items()])
    return annotations


DreamFusionSettings = type("DreamFusionSettings", (bpy.types.PropertyGroup,),
                           {"__annotations__": settings_annotations()})


def adopt_default_model(settings, default_model: str) -> bool:
    """A scene whose model was never chosen takes the preferences' default model (and, for a built-in model,
    its recommended settings). True if it changed."""
    if not default_model or settings.is_property_set("model") or settings.model == default_model:
        return False
    settings.model = default_model
    return True


def spec_values(settings) -> dict:
    """The panel's values as a JobSpec dict (validated by JobSpec.from_dict, which names any bad field)."""
    values = {}
    for name in jobspec_knobs():
        if name in HIDDEN_FIELDS:
            continue
        value, value_type = getattr(settings, name), jobspec_knobs()[name].value_type
        # Blender stores floats in single precision: 1.6 reads back as 1.600000023841858.
        if value_type == "range":
            value = [round(v, 6) for v in value]
        elif value_type == "float":
            value = round(value, 6)
        elif jobspec_knobs()[name].values:  # a menu of numbers: Blender's enum items are strings
            value = int(value)
        values[name] = value
    return values


def with_next_seed(state, values: dict) -> dict:
    """`values` (spec_values) with the seed the next job uses: a fresh random one per job, unless the scene's
    Lock Seed is on (then the panel's). Without this every Generate would repeat the previous run."""
    if state.lock_seed:
        return values
    return {**values, "seed": random.SystemRandom().randint(0, INT_MAX)}


def show_seed(state, seed: int) -> None:
    """Put the seed a job was sent with into the panel, so Lock Seed (or Recall) repeats that very run."""
    if state.settings.seed != seed and seed <= INT_MAX:
        state.settings.seed = seed


class DreamFusionJobItem(bpy.types.PropertyGroup):
    """One job in the scene's list; saved with the .blend so a reopened file can fetch its results."""

    job_id: bpy.props.StringProperty(name="Job ID")
    prompt: bpy.props.StringProperty(name="Prompt")
    state: bpy.props.EnumProperty(name="State", items=[(s, s.capitalize(), "") for s in JOB_STATES],
                                  default=QUEUED)
    step: bpy.props.IntProperty(name="Step", min=0)
    steps: bpy.props.IntProperty(name="Steps", min=0)
    summary: bpy.props.StringProperty(name="Progress")
    reason: bpy.props.StringProperty(name="Reason")
    object: bpy.props.PointerProperty(name="Object", type=bpy.types.Object)
    #: The history: what Recall puts back, and what the list shows.
    spec_json: bpy.props.StringProperty(name="Settings", description="The job's whole JobSpec, as JSON")
    model: bpy.props.StringProperty(name="Model")
    seed: bpy.props.StringProperty(name="Seed")  # a string: seeds go to 2^32-1, past Blender's int properties
    created: bpy.props.FloatProperty(name="Created", description="When the backend accepted the job (Unix time)")
    elapsed: bpy.props.FloatProperty(name="Time Taken", description="Seconds the backend has trained the job",
                                     min=0.0)
    thumbnail: bpy.props.PointerProperty(name="Thumbnail", type=bpy.types.Image,
                                         description="The job's newest preview (packed into the .blend)")
    #: Lineage and placement of a refinement (see addon_core/refine.py).
    parent_job: bpy.props.StringProperty(name="Continues", description="The job this one continues")
    source_object: bpy.props.StringProperty(name="Started From",
                                            description="The object whose mesh this job started from")
    frame: bpy.props.FloatVectorProperty(
        name="Frame", size=16, default=IDENTITY,
        description="The job's frame, row-major: its meshes arrive in it and are written as frame^-1 @ position")
    keep_geometry: bpy.props.BoolProperty(
        name="Keeps Geometry", description="The job's object holds the artist's mesh: only its colours change")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def selected_job(context):
    """The job selected in the scene's list, or None."""
    state = context.scene.dreamfusion
    if 0 <= state.active_job_index < len(state.jobs):
        return state.jobs[state.active_job_index]
    return None


def find_job(job_id: str):
    """(scene, job-list entry) of a job in any scene's list, or (None, None)."""
    for scene in bpy.data.scenes:
        state = getattr(scene, "dreamfusion", None)
        if state is None:
            continue
        for item in state.jobs:
            if item.job_id == job_id:
                return scene, item
    return None, None


def _on_active_job(self, context) -> None:
    # Clicking a job in the list selects its object.
    if not (0 <= self.active_job_index < len(self.jobs)):
        return
    obj = self.jobs[self.active_job_index].object
    # Property updates can come without a window (background mode): fall back to the scene's first layer.
    view_layer = context.view_layer or (context.scene.view_layers[0] if context.scene else None)
    if obj is None or view_layer is None or obj.name not in view_layer.objects:
        return
    for other in view_layer.objects:
        if other.select_get():
            other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj


class DreamFusionScene(bpy.types.PropertyGroup):
    settings: bpy.props.PointerProperty(type=DreamFusionSettings)
    overlay_cameras: bpy.props.BoolProperty(
        name="Show Cameras", default=False, update=_redraw_overlay,
        description="Draw in the viewport where the next job's cameras can be (radius, elevation and azimuth "
                    "ranges), sample views at both field-of-view ends, the front (azimuth 0) and the scene cube")
    overlay_lights: bpy.props.BoolProperty(
        name="Show Light", default=False, update=_redraw_overlay,
        description="Draw in the viewport where the next job's point light can be, and the scene cube")
    overlay_while_running: bpy.props.BoolProperty(
        name="Keep While Running", default=False, update=_redraw_overlay,
        description="Keep drawing the overlay while one of this scene's jobs runs (hidden then by default, so "
                    "the growing object is unobstructed)")
    lock_seed: bpy.props.BoolProperty(
        name="Lock Seed", default=False,
        description="Use the seed shown for every job (to repeat or vary one run). Off: each Generate draws a new "
                    "random seed and shows it here; every job's seed is kept in its Jobs entry")
    jobs: bpy.props.CollectionProperty(type=DreamFusionJobItem)
    active_job_index: bpy.props.IntProperty(name="Job", default=-1, update=_on_active_job)
    refine_steps: bpy.props.IntProperty(
        name="Steps", default=500, min=1, max=int(jobspec_knobs()["steps"].maximum),
        description="Continue and Re-prompt: steps to add to the result's (its job's step count plus these)")
    refine_lock_geometry: bpy.props.BoolProperty(
        name="Lock Geometry", default=False,
        description="Continue and Re-prompt: keep the result's shape and optimise only its colours (a result "
                    "that was textured with its geometry locked stays locked)")


_classes = (DreamFusionSettings, DreamFusionJobItem, DreamFusionScene)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.dreamfusion = bpy.props.PointerProperty(type=DreamFusionScene)


def unregister() -> None:
    del bpy.types.Scene.dreamfusion
    _unregister_classes()
