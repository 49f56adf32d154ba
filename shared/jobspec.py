"""JobSpec: every user-facing knob of one generation, validated where it enters.

Conventions (docs/ARCHITECTURE.md, "Conventions"): Blender's world frame (Z up, metres), azimuth 0
is the front view (camera on -Y looking toward +Y), elevation is positive
above the XY plane, angles are degrees. The scene lives in the cube
[-1, 1]^3 around the origin; the defaults frame an object of about half a
metre radius.

Defaults are the `standard` preset. Ranges are `(min, max)` tuples and are
sampled uniformly by the backend.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, get_args

from .errors import SpecError
from .geometry_options import GEOMETRY_OPTIONS, GeometryOptions, option_knobs
from .knobs import Knob, knob, knobs_of

MAX_PROMPT_CHARS = 500
MAX_PATH_CHARS = 1024
SEED_MAX = 2**32 - 1
#: Priors shipped in the package (backend/toy). toy-objects-view-text is toy-objects' weights read without
#: the camera (backend/guidance/toy_objects.py).
BUILTIN_MODELS = ("toy-shapes", "toy-objects", "toy-objects-view-text")
DEFAULT_MODEL = "toy-shapes"
# Choices as Literal types (what the fields are annotated with) and as tuples (what the knobs offer).
InitMode = Literal["blob", "mesh", "checkpoint"]
LightPlacement = Literal["near_camera", "random_elevation"]
Background = Literal["random", "grey", "white", "black"]
#: The backend's geometry registry (`GEOMETRIES`, backend/geometry/registry.py) has exactly these names.
GeometryName = Literal["density", "sdf"]
#: Where a model comes from (`model_source`).
ModelSource = Literal["builtin", "local", "hub"]
INIT_MODES: tuple[str, ...] = get_args(InitMode)
LIGHT_PLACEMENTS: tuple[str, ...] = get_args(LightPlacement)
BACKGROUNDS: tuple[str, ...] = get_args(Background)
GEOMETRY_NAMES: tuple[str, ...] = get_args(GeometryName)
_GEOMETRY_DEFAULT = "sdf"
#: Sides of the baked albedo texture a final mesh may get; 0 keeps vertex colours only.
TEXTURE_SIZES = (0, 512, 1024, 2048, 4096)
MAX_FACE_COUNT = 2_000_000
#: The fewest triangles decimation may be asked for: a tetrahedron's, the fewest that close a volume. Decimation
#: reaches it on a closed shape; asked for fewer it leaves two back-to-back triangles, or none (face_count 1
#: finished with an empty mesh and no word why).
MIN_FACE_COUNT = 4
MAX_SMOOTHING = 100
#: Best of N (`candidates`): at most this many train side by side, chosen after `select_at` of the steps.
MAX_CANDIDATES = 8
MIN_SELECT_AT, MAX_SELECT_AT = 0.01, 0.99

# A Hugging Face repo id: `owner/name`, each part of letters, digits, - _ .
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.-]{1,96}$")
# A local folder must say it is one: absolute (POSIX or Windows), ~, ./ or ../
_LOCAL_PATH = re.compile(r"^(/|~|\./|\.\./|\.\\|\.\.\\|[A-Za-z]:[\\/]|\\\\)")

MODEL_ALLOWED = (
    f"{', '.join(map(repr, BUILTIN_MODELS))}, a Hugging Face repo id like 'stabilityai/stable-diffusion-2-1-base', "
    f"or a local folder path starting with /, ~, ./ or a drive letter (at most {MAX_PATH_CHARS} characters)"
)


def random_seed() -> int:
    """A fresh seed; the spec records it so the run can be repeated."""
    return random.SystemRandom().randint(0, SEED_MAX)


def model_source(model: str) -> ModelSource:
    """Where a model string that passed validation comes from: 'builtin', 'local' (a folder) or 'hub'."""
    if model in BUILTIN_MODELS:
        return "builtin"
    if _LOCAL_PATH.match(model):
        return "local"
    return "hub"


#: Steps at which a fresh run streams a mesh before its first `stream_every` (`trainer.streams_at`): the
#: artist sees a shape within seconds instead of after the first interval (100 toy steps: 14-17 s alone).
EARLY_STREAMS = (10, 25, 50)


@dataclass(frozen=True)
class JobSpec:
    """One generation request. Construct it directly or with `from_dict`; both validate."""

    # --- prompt -----------------------------------------------------------
    prompt: str = knob(value_type="text", max_len=MAX_PROMPT_CHARS, required=True, group="prompt",
                       help="What to generate, e.g. 'a red cube'")
    negative_prompt: str = knob("", value_type="text", max_len=MAX_PROMPT_CHARS, group="prompt",
                                help="What to steer away from")
    seed: int = knob(factory=random_seed, value_type="int", minimum=0, maximum=SEED_MAX, group="prompt",
                     help="Random seed; the same seed, spec and machine give the same result")
    steps: int = knob(5000, value_type="int", minimum=1, maximum=200_000, group="prompt", unit="steps",
                      help="Optimisation steps")
    candidates: int = knob(1, value_type="int", minimum=1, maximum=MAX_CANDIDATES, group="prompt",
                           help="Best of N: train this many candidates from different seeds (the job's seed and "
                                "seeds derived from it) until select_at, keep the one the prior judges best (or "
                                "the artist picks) and train it alone to the end (1: a single run)")
    select_at: float = knob(0.25, value_type="float", minimum=MIN_SELECT_AT, maximum=MAX_SELECT_AT, group="prompt",
                            help="With candidates: the share of the steps after which one candidate is chosen")
    # --- guidance -----------------------------------------------------------
    model: str = knob(DEFAULT_MODEL, value_type="text", max_len=MAX_PATH_CHARS, group="guidance",
                      help=f"Diffusion prior: {', '.join(BUILTIN_MODELS)}, a diffusers repo id or a local folder")
    guidance_scale: float = knob(100.0, value_type="float", minimum=1.0, maximum=500.0, group="guidance",
                                 help="Classifier-free guidance scale (DreamFusion uses 100)")
    t_range: tuple[float, float] = knob((0.02, 0.98), value_type="range", minimum=0.0, maximum=1.0,
                                        group="guidance",
                                        help="Diffusion noise levels sampled for SDS, as fractions of the schedule")
    t_anneal: float = knob(0.0, value_type="float", minimum=0.0, maximum=1.0, group="guidance",
                           help="Shrink the top of t_range toward its bottom over the run by this share "
                                "(0: off), so late steps refine detail instead of reshaping (DreamTime)")
    view_dependent: bool = knob(True, value_type="bool", group="guidance",
                                help="Append front/side/back/overhead view text to the prompt")
    perp_neg: float = knob(0.0, value_type="float", minimum=0.0, maximum=10.0, group="guidance",
                           help="Perp-Neg strength against multiple faces (0: off; 2 as in stable-dreamfusion and "
                                "the paper): the prompt blends its front/side/back views by azimuth and steers away "
                                "from the other views; costs up to two more prior evaluations per view")
    # --- camera -----------------------------------------------------------
    camera_radius: tuple[float, float] = knob((1.5, 2.0), value_type="range", minimum=0.5, maximum=20.0,
                                              unit="m", group="camera",
                                              help="Camera distance from the origin")
    camera_elevation: tuple[float, float] = knob((-10.0, 90.0), value_type="range", minimum=-90.0, maximum=90.0,
                                                 unit="deg", group="camera",
                                                 help="Camera height angle above the XY plane")
    camera_azimuth: tuple[float, float] = knob((-180.0, 180.0), value_type="range", minimum=-360.0, maximum=360.0,
                                               max_span=360.0, unit="deg", group="camera",
                                               help="Camera angle around Z; 0 is the front view (camera on -Y)")
    camera_fov: tuple[float, float] = knob((40.0, 70.0), value_type="range", minimum=5.0, maximum=120.0,
                                           unit="deg", group="camera",
                                           help="Vertical field of view")
    # --- light ------------------------------------------------------------
    light_placement: LightPlacement = knob("near_camera", value_type="choice", choices=LIGHT_PLACEMENTS, group="light",
                                help="near_camera: around the camera direction (DreamFusion); "
                                     "random_elevation: any azimuth within light_elevation")
    light_distance: tuple[float, float] = knob((1.5, 3.0), value_type="range", minimum=0.1, maximum=100.0,
                                               unit="m", group="light",
                                               help="Point light distance from the origin")
    light_offset: float = knob(45.0, value_type="float", minimum=0.0, maximum=180.0, unit="deg", group="light",
                               help="near_camera: largest angle between light and camera directions")
    light_elevation: tuple[float, float] = knob((10.0, 80.0), value_type="range", minimum=-90.0, maximum=90.0,
                                                unit="deg", group="light",
                                                help="random_elevation: light height angle")
    ambient: tuple[float, float] = knob((0.1, 0.3), value_type="range", minimum=0.0, maximum=1.0, group="light",
                                        help="Ambient share a of lambertian shading a + (1-a) max(0, n.l)")
    # --- shading mix (relative weights, normalised by the backend) ---------
    shading_albedo: float = knob(0.2, value_type="float", minimum=0.0, maximum=1.0, group="light",
                                 help="Relative weight of albedo-only renders")
    shading_lambertian: float = knob(0.6, value_type="float", minimum=0.0, maximum=1.0, group="light",
                                     help="Relative weight of lambertian-shaded renders")
    shading_textureless: float = knob(0.2, value_type="float", minimum=0.0, maximum=1.0, group="light",
                                      help="Relative weight of shaded white (textureless) renders")
    background: Background = knob("random", value_type="choice", choices=BACKGROUNDS, group="light",
                           help="Behind the object in training renders: random: a new colour per view "
                                "(DreamFusion's augmentation); grey, white, black: that colour, for priors "
                                "trained on it")
    # --- optimisation -------------------------------------------------------
    render_resolution: int = knob(64, value_type="int", minimum=16, maximum=1024, unit="px", group="optimiser",
                                  help="Side of the square training render")
    views_per_step: int = knob(1, value_type="int", minimum=1, maximum=16, group="optimiser",
                               help="Cameras rendered and scored per step (a batch of views)")
    learning_rate: float = knob(0.01, value_type="float", minimum=1e-6, maximum=1.0, group="optimiser",
                                help="Adam learning rate of the field")
    orientation_weight: float = knob(0.01, value_type="float", minimum=0.0, maximum=10_000.0, group="optimiser",
                                     help="Orientation loss: penalises normals facing away from the camera")
    opacity_weight: float = knob(0.0, value_type="float", minimum=0.0, maximum=10_000.0, group="optimiser",
                                 help="Sparsity: penalises total opacity")
    entropy_weight: float = knob(0.001, value_type="float", minimum=0.0, maximum=10_000.0, group="optimiser",
                                 help="Pushes each ray's opacity toward 0 or 1")
    geometry: GeometryName = knob(_GEOMETRY_DEFAULT, value_type="choice", choices=GEOMETRY_NAMES, group="optimiser",
                         help="How the shape is held: density: a density field, its surface an iso-level chosen at "
                              "extraction (DreamFusion); sdf: a signed distance, its surface the zero level set "
                              "(crisp, solid)")
    #: The chosen geometry's own options (shared/geometry_options.py: the SDF's eikonal_weight): a GeometryOptions
    #: or a mapping of them, checked against that geometry's options; None: its defaults. On the wire (and in
    #: panels, CLIs and prompt files) each option is a field of its own name, so the wire is as it always was.
    geometry_options: GeometryOptions | Mapping[str, Any] | None = dataclasses.field(default=None, kw_only=True)
    init: InitMode = knob("blob", value_type="choice", choices=INIT_MODES, group="optimiser",
                     help="Start from the initial blob (density) or sphere (sdf), a mesh, or a checkpoint")
    init_from: str = knob("", value_type="text", max_len=MAX_PATH_CHARS, group="optimiser",
                          help="checkpoint: a job id or checkpoint path on the backend; "
                               "mesh: a .glb/.gltf/.obj/.ply path on the backend, or empty when the mesh travels "
                               "with the submit")
    lock_geometry: bool = knob(False, value_type="bool", group="optimiser",
                               help="Texture only: the shape stays the start's (init = mesh: the very same mesh, "
                                    "with new vertex colours; checkpoint: its shape) and only colour is optimised")
    # --- output -------------------------------------------------------------
    stream_every: int = knob(100, value_type="int", minimum=0, maximum=200_000, unit="steps", group="output",
                             help="Send the mesh to Blender every N steps, and at steps "
                                  f"{', '.join(map(str, EARLY_STREAMS[:-1]))} and {EARLY_STREAMS[-1]} before the "
                                  "first (0: only the final mesh)")
    mesh_resolution: int = knob(128, value_type="int", minimum=16, maximum=512, group="output",
                                help="Marching-cubes grid size per axis")
    # Final-result post-processing: the finished mesh only (streamed meshes stay raw and fast).
    smoothing: int = knob(0, value_type="int", minimum=0, maximum=MAX_SMOOTHING, unit="iterations", group="output",
                          help="Taubin smoothing of the final mesh (0: off); it keeps the shape's size and volume")
    face_count: int = knob(0, value_type="int", minimum=0, least_on=MIN_FACE_COUNT, maximum=MAX_FACE_COUNT,
                           unit="faces", group="output",
                           help="Decimate the final mesh to about this many triangles, keeping its silhouette and "
                                "keeping it closed (0: keep every triangle)")
    texture_size: int = knob(0, value_type="int", values=TEXTURE_SIZES, minimum=0, maximum=TEXTURE_SIZES[-1],
                             unit="px", group="output",
                             help="Bake the final mesh's albedo into a UV-mapped texture of this side (0: vertex "
                                  "colours only); a locked start mesh is baked into its own UVs when it has them")

    def __post_init__(self) -> None:
        if self.seed is None:  # "random": draw now so the spec records it
            object.__setattr__(self, "seed", random_seed())
        for name, spec in knobs_of(type(self)).items():
            object.__setattr__(self, name, spec.check(name, getattr(self, name)))
        object.__setattr__(self, "geometry_options", self._checked_options())
        self._check_across_fields()

    def _checked_options(self) -> GeometryOptions:
        options, kind = self.geometry_options, GEOMETRY_OPTIONS[self.geometry]
        if options is None:
            return kind()
        if isinstance(options, GeometryOptions):
            if type(options) is not kind:
                raise SpecError("geometry_options", options.to_dict(), f"options of the {self.geometry} geometry",
                                "are another geometry's")
            return options
        return kind.from_dict(self.geometry, options)

    def _check_across_fields(self) -> None:
        if model_source(self.model) == "hub" and not _REPO_ID.match(self.model):
            raise SpecError("model", self.model, MODEL_ALLOWED, "is not a model name")
        weights = (self.shading_albedo, self.shading_lambertian, self.shading_textureless)
        if sum(weights) <= 0.0:
            raise SpecError("shading_albedo", weights,
                            "weights in [0, 1] with at least one of shading_albedo, "
                            "shading_lambertian, shading_textureless above 0", "are all zero")
        if self.perp_neg and not self.view_dependent:
            raise SpecError("perp_neg", self.perp_neg, "0 when view_dependent is off (Perp-Neg blends the view "
                            "prompts)", "is set")
        if self.init == "blob" and self.init_from:
            raise SpecError("init_from", self.init_from, "empty when init is 'blob'", "is set")
        if self.lock_geometry and self.init == "blob":
            raise SpecError("lock_geometry", True, "false when init is 'blob' (there is no shape to keep yet); "
                            "true with init 'mesh' or 'checkpoint'", "is set")
        if self.init == "mesh" and self.lock_geometry:
            for name in ("smoothing", "face_count"):
                if getattr(self, name):
                    raise SpecError(name, getattr(self, name), "0 when lock_geometry keeps the start mesh "
                                    "(its every vertex is kept as it is)", "is set")
        if self.init == "checkpoint" and not self.init_from.strip():
            raise SpecError("init_from", self.init_from,
                            "a job id or checkpoint path when init is 'checkpoint'", "is empty")

    # --- conversion -------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  model_defaults: Callable[[Any], Mapping[str, Any]] | None = None) -> "JobSpec":
        """Build from JSON-like data. Unknown fields and bad values raise SpecError.

        An optional `"preset"` key supplies the base values; the other keys
        override it. `"seed": null` (or no seed) draws one and records it.
        `model_defaults(model)`, when given, fills the fields `data` leaves
        out, under the preset (what the named model recommends). Which fields
        were left out (by `data` and its preset) stays known to the spec, so a
        later step may fill them after all (`fill_left_out`).

        A geometry's options are fields of their own names (`"eikonal_weight": 0.1`), and go into the spec's
        `geometry_options`; another geometry's option is checked, then left out: it is not this spec's concern
        (a panel holds every geometry's, and every spec written before options moved named eikonal_weight).
        """
        if not isinstance(data, Mapping):
            raise SpecError("spec", data, "a JSON object of JobSpec fields", "is not an object")
        data = dict(data)
        base: dict[str, Any] = {}
        known, options = knobs_of(cls), option_knobs()
        settings = jobspec_knobs()  # the fields and every option by its flat name, in the panel's order
        if model_defaults is not None and not set(known) <= set(data):
            base.update((k, v) for k, v in model_defaults(data.get("model", DEFAULT_MODEL)).items() if k in settings)
        chosen = set(data)
        if "preset" in data:
            preset = preset_values(data.pop("preset"))
            base.update(preset)
            chosen |= set(preset)
        for name in data:
            if name not in settings:
                raise SpecError(str(name), data[name], "one of " + ", ".join(settings), "is not a JobSpec field")
        if "prompt" not in data:
            raise SpecError("prompt", None, known["prompt"].allowed(), "is missing")
        base.update(data)
        flat = {name: base.pop(name) for name in list(base) if name in options}
        if flat:
            geometry = known["geometry"].check("geometry", base.get("geometry", _GEOMETRY_DEFAULT))
            for name, value in flat.items():  # another geometry's is left out, yet a bad value is still refused
                options[name][1].check(name, value)
            base["geometry_options"] = {name: value for name, value in flat.items() if options[name][0] == geometry}
        spec = cls(**base)
        object.__setattr__(spec, "_left_out", frozenset(settings) - chosen)  # not a field: not on the wire
        return spec

    def fill_left_out(self, values: Mapping[str, Any]) -> "JobSpec":
        """This spec with the fields its sender left out taken from `values` (a model's recommendations read only
        now). Only a spec straight from `from_dict` knows what was left out; any other leaves nothing to fill."""
        left_out = getattr(self, "_left_out", frozenset())
        changes = {name: value for name, value in values.items() if name in left_out}
        return self.replace(**changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `from_dict(to_dict())` gives back an equal spec. The chosen geometry's options follow
        `geometry`, each by its own name (the wire's form, and the panel's)."""
        out: dict[str, Any] = {}
        for name in knobs_of(type(self)):
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
            if name == "geometry":
                out.update(self.geometry_options.to_dict())
        return out

    @classmethod
    def from_preset(cls, preset: str, **fields: Any) -> "JobSpec":
        return cls.from_dict({"preset": preset, **fields})

    def replace(self, **changes: Any) -> "JobSpec":
        """A validated copy with some fields (or options, by their flat names) changed. A new geometry starts from
        its own options' defaults."""
        options = option_knobs()
        flat = {name: options[name][1].check(name, changes.pop(name)) for name in list(changes) if name in options}
        geometry = changes.get("geometry", self.geometry)
        if "geometry_options" not in changes and (flat or geometry != self.geometry):
            kept = self.geometry_options.to_dict() if geometry == self.geometry else {}
            mine = {name: value for name, value in flat.items() if options[name][0] == geometry}
            changes["geometry_options"] = {**kept, **mine}
        return dataclasses.replace(self, **changes)

    # --- derived values the backend needs ----------------------------------

    @property
    def model_source(self) -> ModelSource:
        return model_source(self.model)

    def select_step(self, start: int = 0) -> int:
        """The step after which a best-of-N job chooses its candidate: select_at of the steps it takes from
        `start` (a continuation's parent's step), and before the last."""
        if self.steps <= start:
            return start
        return max(start, min(self.steps - 1, start + int(round(self.select_at * (self.steps - start)))))

    def shading_probabilities(self) -> dict[str, float]:
        weights = {"albedo": self.shading_albedo, "lambertian": self.shading_lambertian,
                   "textureless": self.shading_textureless}
        total = sum(weights.values())
        return {k: v / total for k, v in weights.items()}


#: Named starting points; anything not listed keeps the JobSpec default.
PRESETS: dict[str, dict[str, Any]] = {
    "draft": {"steps": 1000, "render_resolution": 64, "mesh_resolution": 64, "stream_every": 50},
    "standard": {"steps": 5000, "render_resolution": 64, "mesh_resolution": 128, "stream_every": 100},
    "high": {"steps": 10000, "render_resolution": 128, "mesh_resolution": 256, "stream_every": 250},
}


def preset_values(name: Any) -> Mapping[str, Any]:
    if not isinstance(name, str) or name not in PRESETS:  # a list or object is unhashable: refuse, never raise
        raise SpecError("preset", name, "one of " + ", ".join(repr(p) for p in PRESETS), "is not a preset")
    return PRESETS[name]


def jobspec_knobs() -> dict[str, Knob]:
    """Setting name -> Knob for every JobSpec field and every geometry's option, the options right after
    `geometry` (for panels, CLIs and prompt files, which name options flat: `JobSpec.settings`)."""
    out: dict[str, Knob] = {}
    for name, rule in knobs_of(JobSpec).items():
        out[name] = rule
        if name == "geometry":
            out.update((option, option_rule) for option, (_, option_rule) in option_knobs().items())
    return out
