"""JobSpec validation: every rejection names the field, the value and the allowed range."""

import dataclasses
import json
import re

import pytest

from blender_dreamfusion.shared import PRESETS, JobSpec, SpecError, jobspec_knobs, model_source
from blender_dreamfusion.shared.geometry_options import GEOMETRY_OPTIONS, DensityOptions, SDFOptions
from blender_dreamfusion.shared.jobspec import GEOMETRY_NAMES
from blender_dreamfusion.shared.knobs import knobs_of


def spec(**fields):
    return JobSpec.from_dict({"prompt": "a red cube", **fields})


def test_defaults_are_the_standard_preset_and_valid():
    default = JobSpec(prompt="a red cube")
    standard = JobSpec.from_preset("standard", prompt="a red cube", seed=default.seed)
    assert default == standard
    assert default.t_range == (0.02, 0.98)
    assert default.model == "toy-shapes" and default.init == "blob"


@pytest.mark.parametrize("fields, field, match", [
    ({"prompt": ""}, "prompt", r"prompt = '' is empty; allowed: non-empty text of at most 500 characters"),
    ({"prompt": "   "}, "prompt", "is empty"),
    ({"prompt": "x" * 501}, "prompt", r"is too long \(501 characters\); allowed: non-empty text of at most 500"),
    ({"prompt": "a\x00cube"}, "prompt", "contains control characters"),
    ({"prompt": "a \ud800 cube"}, "prompt", "unpaired surrogates"),
    ({"negative_prompt": 3}, "negative_prompt", "is not text"),
    ({"steps": 0}, "steps", r"steps = 0 is out of range; allowed: an integer from 1 to 200000 steps"),
    ({"steps": 2.5}, "steps", "is not an integer"),
    ({"steps": True}, "steps", "is not an integer"),
    ({"seed": -1}, "seed", r"allowed: an integer from 0 to 4294967295"),
    ({"seed": 2**32}, "seed", "out of range"),
    ({"guidance_scale": 0.5}, "guidance_scale", r"allowed: a number from 1 to 500"),
    ({"guidance_scale": float("nan")}, "guidance_scale", "is not finite"),
    ({"guidance_scale": 10**400}, "guidance_scale", "is too large"),
    ({"t_range": [0.5, 0.2]}, "t_range", r"has min > max; allowed: \[min, max\] with 0 <= min <= max <= 1"),
    ({"t_range": [0.1, 1.5]}, "t_range", "out of range"),
    ({"t_range": [0.1]}, "t_range", r"is not a \[min, max\] pair"),
    ({"t_range": "0.1-0.9"}, "t_range", "is not a"),
    ({"camera_elevation": [-100, 10]}, "camera_elevation", r"allowed: \[min, max\] with -90 <= min <= max <= 90 deg"),
    ({"camera_azimuth": [-300, 300]}, "camera_azimuth", r"spans too much; .*max - min <= 360"),
    ({"camera_fov": [1, 60]}, "camera_fov", r"5 <= min <= max <= 120 deg"),
    ({"camera_radius": [0.1, 2]}, "camera_radius", r"0.5 <= min <= max <= 20 m"),
    ({"light_placement": "sun"}, "light_placement", r"allowed: one of 'near_camera', 'random_elevation'"),
    ({"light_offset": 181}, "light_offset", "from 0 to 180 deg"),
    ({"ambient": [0, 2]}, "ambient", "0 <= min <= max <= 1"),
    ({"view_dependent": "yes"}, "view_dependent", "allowed: true or false"),
    ({"render_resolution": 8}, "render_resolution", "from 16 to 1024 px"),
    ({"mesh_resolution": 1024}, "mesh_resolution", "from 16 to 512"),
    ({"stream_every": -5}, "stream_every", "from 0 to 200000 steps"),
    ({"learning_rate": 0}, "learning_rate", "from 1e-06 to 1"),
    ({"entropy_weight": -1}, "entropy_weight", "from 0 to 10000"),
    ({"init": "noise"}, "init", "one of 'blob', 'mesh', 'checkpoint'"),
    ({"init": "checkpoint"}, "init_from", "a job id or checkpoint path when init is 'checkpoint'"),
    ({"init_from": "/tmp/x.ckpt"}, "init_from", "empty when init is 'blob'"),
    ({"shading_albedo": 0, "shading_lambertian": 0, "shading_textureless": 0}, "shading_albedo", "are all zero"),
    ({"model": "not a model"}, "model", "a Hugging Face repo id like"),
    ({"model": ""}, "model", "is not a model name"),
    ({"model": "a/b/c"}, "model", "is not a model name"),
    ({"colour": "red"}, "colour", "is not a JobSpec field; allowed: one of prompt, negative_prompt"),
    ({"preset": "ultra"}, "preset", r"allowed: one of 'draft', 'standard', 'high'"),
])
def test_rejections_name_field_value_and_range(fields, field, match):
    with pytest.raises(SpecError, match=match) as info:
        spec(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} = ")


def test_prompt_is_required_and_data_must_be_an_object():
    with pytest.raises(SpecError, match="prompt = None is missing"):
        JobSpec.from_dict({"steps": 10})
    with pytest.raises(SpecError, match="is not an object"):
        JobSpec.from_dict(["a red cube"])


def test_direct_construction_validates_too():
    with pytest.raises(SpecError, match="steps"):
        JobSpec(prompt="x", steps=-1)
    with pytest.raises(SpecError, match="steps"):
        JobSpec(prompt="x").replace(steps=0)


def test_random_seed_is_drawn_and_recorded():
    a, b = spec(), spec(seed=None)
    assert isinstance(a.seed, int) and isinstance(b.seed, int)
    assert a.to_dict()["seed"] == a.seed
    assert len({spec().seed for _ in range(20)}) > 1
    assert spec(seed=7).seed == 7


def test_presets_apply_and_explicit_fields_win():
    draft = spec(preset="draft")
    assert draft.steps == PRESETS["draft"]["steps"] and draft.mesh_resolution == PRESETS["draft"]["mesh_resolution"]
    assert spec(preset="high", steps=123).steps == 123
    assert "preset" not in draft.to_dict()
    assert {"draft", "standard", "high"} <= set(PRESETS)
    steps = [spec(preset=p).steps for p in ("draft", "standard", "high")]
    assert steps == sorted(steps)


def test_round_trip_is_exact_and_json_ready():
    s = spec(t_range=[0.1, 0.5], guidance_scale=7, seed=3)
    d = s.to_dict()
    assert d["t_range"] == [0.1, 0.5] and isinstance(d["guidance_scale"], float)
    assert JobSpec.from_dict(d) == s
    assert set(d) == set(jobspec_knobs())  # the default geometry (sdf) has every option there is


@pytest.mark.parametrize("model, source", [
    ("toy-shapes", "builtin"),
    ("stabilityai/stable-diffusion-2-1-base", "hub"),
    ("/srv/models/sd21", "local"),
    ("./sd", "local"),
    ("~/models/sd", "local"),
    ("C:\\models\\sd", "local"),
    ("D:/models/sd", "local"),
])
def test_model_sources(model, source):
    assert model_source(model) == source
    assert spec(model=model).model_source == source


def test_shading_weights_are_normalised():
    probabilities = spec(shading_albedo=0.25, shading_lambertian=0.25, shading_textureless=0.5).shading_probabilities()
    assert probabilities == {"albedo": 0.25, "lambertian": 0.25, "textureless": 0.5}
    assert sum(spec(shading_albedo=0.3, shading_lambertian=0.3, shading_textureless=0.3).shading_probabilities().values()) == pytest.approx(1.0)


def test_every_field_has_a_knob_with_help_and_a_complete_range():
    fields = {f.name for f in dataclasses.fields(JobSpec)} - {"geometry_options"}
    options = {name for cls in GEOMETRY_OPTIONS.values() for name in knobs_of(cls)}
    knobs = jobspec_knobs()
    assert fields | options == set(knobs) and not fields & options
    for name, knob in knobs.items():
        assert knob.help, name
        if knob.value_type in ("int", "float", "range"):
            assert knob.minimum is not None and knob.maximum is not None, name
        if knob.value_type == "text":
            assert knob.max_len > 0, name


# --- a geometry's own options ------------------------------------------------------------------------------------

def test_each_geometry_has_its_options_and_their_names_are_unique():
    assert set(GEOMETRY_OPTIONS) == set(GEOMETRY_NAMES)
    names = [name for cls in GEOMETRY_OPTIONS.values() for name in knobs_of(cls)]
    assert len(names) == len(set(names)), "an option name must say which geometry it is for"
    assert not set(names) & {f.name for f in dataclasses.fields(JobSpec)}


def test_the_sdf_holds_its_options_and_the_wire_names_them_as_before():
    s = spec(geometry="sdf", eikonal_weight=0.5)
    assert s.geometry_options == SDFOptions(eikonal_weight=0.5)
    d = s.to_dict()
    keys = list(d)
    assert d["eikonal_weight"] == 0.5 and keys[keys.index("geometry") + 1] == "eikonal_weight"  # where it was
    assert "geometry_options" not in d
    assert JobSpec.from_dict(json.loads(json.dumps(d))) == s
    density = spec(geometry="density")
    assert density.geometry_options == DensityOptions() and "eikonal_weight" not in density.to_dict()


def test_a_spec_from_before_options_moved_still_loads():
    """Every spec written before named eikonal_weight, whatever its geometry (a checkpoint's, a script's, an old
    add-on's): an SDF keeps it, a density field never used it."""
    old = {**spec(geometry="sdf").to_dict(), "eikonal_weight": 0.7}
    assert JobSpec.from_dict(old).geometry_options.eikonal_weight == 0.7
    assert JobSpec.from_dict({**old, "geometry": "density"}).geometry_options == DensityOptions()


@pytest.mark.parametrize("data, field, problem", [
    ({"eikonal_weight": -1}, "eikonal_weight", "is out of range; allowed: a number from 0 to 10000"),
    ({"eikonal_weight": "lots"}, "eikonal_weight", "is not a number"),
    ({"eikonal_weight": float("nan")}, "eikonal_weight", "is not finite"),
    ({"geometry": "density", "eikonal_weight": -2}, "eikonal_weight", "is out of range"),
    ({"geometry_options": {"eikonal_weight": 1}}, "geometry_options", "is not a JobSpec field"),
])
def test_bad_options_name_the_option_and_what_is_allowed(data, field, problem):
    with pytest.raises(SpecError, match=re.escape(problem)) as info:
        JobSpec.from_dict({"prompt": "x", **data})
    assert info.value.field == field


def test_options_given_in_python_are_checked_against_the_geometry():
    assert JobSpec(prompt="x", geometry_options={"eikonal_weight": 2.0}).geometry_options.eikonal_weight == 2.0
    with pytest.raises(SpecError, match="is not an option of this geometry; allowed: the sdf geometry's options"):
        JobSpec(prompt="x", geometry_options={"bogus": 1})
    with pytest.raises(SpecError, match="allowed: no options"):
        JobSpec(prompt="x", geometry="density", geometry_options={"eikonal_weight": 1})
    with pytest.raises(SpecError, match="another geometry's"):
        JobSpec(prompt="x", geometry="density", geometry_options=SDFOptions())


def test_changing_the_geometry_starts_from_its_own_options():
    s = spec(geometry="sdf", eikonal_weight=0.5)
    assert s.replace(geometry="density").geometry_options == DensityOptions()
    assert s.replace(eikonal_weight=2.0).geometry_options == SDFOptions(eikonal_weight=2.0)
    assert s.replace(steps=3).geometry_options == SDFOptions(eikonal_weight=0.5)
    with pytest.raises(SpecError, match="another geometry's"):
        dataclasses.replace(s, geometry="density")  # an SDF's options on a density field
