"""The toy-shapes prior: vocabulary, primitives, quality metric, training script, shipped weights, real SDS.

The shipped weights (50 min of CPU training) with the recommended signed-distance
geometry make the named shape and colour, as a crisp solid, on the prompts below
(seeds other than 0), the red cube square-sided and facing the axes as it was
shown. bench/toy_quality.py measures every pair on seeds nobody tuned on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.checkpoint import load_field
from blender_dreamfusion.backend.crispness import crispness
from blender_dreamfusion.backend.extract import extract_mesh
from blender_dreamfusion.backend.geometry import DensityField
from blender_dreamfusion.backend.generate import generate
from blender_dreamfusion.shared.recommended import recommendations
from blender_dreamfusion.backend.guidance import ModelLoadError, load_guidance
from blender_dreamfusion.backend.guidance.camera_pixel import CameraAwarePixelGuidance, camera_features
from blender_dreamfusion.backend.guidance.toy import ToyGuidance
from blender_dreamfusion.backend.renderer import render
from blender_dreamfusion.backend.toy.data import NO_COLOUR, make_images
from blender_dreamfusion.backend.toy.primitives import PrimitiveField
from blender_dreamfusion.backend.toy.quality import hue_error, shape_distances, yaw_offset
from blender_dreamfusion.backend.toy.vocab import SHAPES, VocabularyError, parse_prompt
from blender_dreamfusion.shared import JobSpec, MeshData

SCRIPT = str(Path(sys.executable).with_name("dreamfusion-backend"))


@pytest.mark.parametrize("prompt, parsed", [
    ("a red cube", ("cube", "red", None)),
    ("A Cube", ("cube", None, None)),
    ("a purple torus, overhead view", ("torus", "purple", "overhead")),
    ("an orange sphere", ("sphere", "orange", None)),
    ("  The   WHITE  cone ", ("cone", "white", None)),
    ("purple cylinder", ("cylinder", "purple", None)),
    ("torus", ("torus", None, None)),
    ("", (None, None, None)),
])
def test_vocabulary(prompt, parsed):
    result = parse_prompt(prompt)
    assert (result.shape, result.colour, result.view) == parsed


def test_the_prior_reads_every_accepted_prompt_in_its_canonical_form():
    guidance = load_guidance("toy-shapes", torch.device("cpu"))
    assert guidance.condition_prompt("An  Orange sphere, front view", "lambertian") == "a orange sphere, front view"
    assert guidance.condition_prompt("the white cone", "textureless") == "a cone"


@pytest.mark.parametrize("prompt", ["a red dragon", "a pink cube", "two cubes", "a cube, top view", "an a cube",
                                    "some red cube"])
def test_prompts_outside_the_vocabulary_are_refused_with_the_vocabulary(prompt):
    with pytest.raises(VocabularyError, match="shapes cube, sphere, torus, cone, cylinder and colours red"):
        parse_prompt(prompt)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_quality_metric_recognises_each_primitive(shape):
    mesh = extract_mesh(PrimitiveField(shape, (0.85, 0.1, 0.1)), 64).mesh
    distances = shape_distances(mesh)
    assert min(distances, key=distances.get) == shape
    assert hue_error(mesh, "red") < 5 and hue_error(mesh, "green") > 90


@pytest.mark.parametrize("rgb, white", [((0.92, 0.92, 0.92), True), ((0.95, 0.9, 0.85), True),
                                        ((0.35, 0.37, 0.42), False), ((0.9, 0.6, 0.6), False)])
def test_white_is_judged_by_lightness_and_saturation(rgb, white):
    mesh = MeshData.coerce(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]),
                           np.full((3, 3), np.round(np.array(rgb) * 255), dtype=np.uint8))
    error = hue_error(mesh, "white")
    assert error == 0.0 if white else error >= 45.0


def test_primitives_are_upright_and_the_cube_faces_the_axes():
    cone = extract_mesh(PrimitiveField("cone"), 64).mesh.positions
    apex = cone[cone[:, 2].argmax()]
    assert apex[2] > 0.4 and abs(apex[:2]).max() < 0.05  # apex up, on the Z axis
    cube = extract_mesh(PrimitiveField("cube"), 64).mesh.positions
    assert abs(cube[:, 0].max() - cube[:, 1].max()) < 0.02 and cube[:, 0].max() < 0.45  # faces on +-X/+-Y


def test_training_images_follow_the_trainer_sampling():
    data = make_images(128, resolution=32, seed=1, batch=32)
    assert data.images.shape == (128, 3, 32, 32) and data.images.dtype.name == "uint8"
    assert set(data.shapes) <= set(range(len(SHAPES)))
    assert (data.elevation >= -10).all() and (data.elevation <= 90).all()
    textureless = data.colours == NO_COLOUR
    assert all("red " not in data.prompt(i) for i in range(128) if textureless[i])
    assert data.prompt(0, with_view=False).startswith("a ")


def test_missing_builtin_weights_are_a_clear_error(monkeypatch, tmp_path):
    from blender_dreamfusion.backend import toy

    monkeypatch.setitem(toy.BUILTIN_WEIGHTS, "toy-shapes", tmp_path / "nothing")
    with pytest.raises(ModelLoadError, match="train them with `python -m blender_dreamfusion.backend.toy.train "
                                             "--prior toy-shapes`"):
        load_guidance("toy-shapes", torch.device("cpu"))


def test_weights_load_offline_from_the_package_and_unknown_words_fail_clearly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = ("import torch; from blender_dreamfusion.backend.guidance import load_guidance; g = load_guidance('toy-shapes', "
            "torch.device('cpu')); print(type(g).__name__, g.input_size)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "ToyGuidance 32" in done.stdout, done.stderr
    dragon = subprocess.run([SCRIPT, "generate", "a red dragon", "--quiet"], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert dragon.returncode == 1
    assert "outside the vocabulary" in dragon.stderr and "cube, sphere, torus" in dragon.stderr
    assert len(dragon.stderr.strip().splitlines()) == 1


#: Seeds other than 0 (not the seeds the settings were tuned on), a white, a purple and an 'an orange' prompt;
#: the README's own command checks the cube below, bench/toy_quality.py measures every pair.
QUALITY_PROMPTS = [("an orange sphere", "sphere", "orange", 11), ("a white torus", "torus", "white", 12),
                   ("A purple cylinder", "cylinder", "purple", 13)]
ROOT = Path(__file__).resolve().parents[1]


def assert_named_shape_and_colour(mesh: MeshData, shape: str, colour: str, message: str = "") -> None:
    assert mesh.vertex_count > 100, message
    distances = shape_distances(mesh)
    assert min(distances, key=distances.get) == shape, distances
    assert hue_error(mesh, colour) < 30.0
    if shape == "cube":  # square-sided and axis-aligned: faces toward +-X / +-Y, as the prior was shown
        assert yaw_offset(mesh, "cube") <= 15.0


def assert_crisp(checkpoint: Path, mesh: MeshData) -> None:
    """A solid surface with a clean skin, and a mesh that is what the renders show."""
    field, occupancy = load_field(checkpoint)
    figures = crispness(field, mesh, occupancy)
    assert figures["soft_share"] <= 0.1 and figures["silhouette_iou"] >= 0.9, figures
    assert figures["roughness_deg"] < 10.0, figures


@pytest.mark.slow
@pytest.mark.parametrize("prompt, shape, colour, seed", QUALITY_PROMPTS)
def test_text_to_3d_with_the_shipped_prior_makes_the_named_shape_and_colour(prompt, shape, colour, seed, tmp_path):
    spec = JobSpec.from_dict({**recommendations("toy-shapes"), "prompt": prompt, "seed": seed})
    assert spec.render_resolution == 32 and spec.background == "grey"  # the model's recommendations apply
    assert spec.geometry == "sdf"
    result = generate(spec, tmp_path / "out.glb", device="cpu", show_progress=False)
    assert_named_shape_and_colour(result.extraction.mesh, shape, colour, result.extraction.message)
    assert_crisp(result.checkpoint, result.extraction.mesh)


@pytest.mark.slow
def test_the_readme_main_command_writes_a_red_cube(tmp_path):
    """Set-up command 1's generate step as written (seed fixed, so a failure can be repeated)."""
    import shlex

    import trimesh

    command = next(line for line in (ROOT / "README.md").read_text().splitlines()
                   if line.startswith("    python3.11 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . "))
    args = shlex.split(command.rsplit("&& ", 1)[1])
    assert args[:2] == [".venv/bin/dreamfusion-backend", "generate"] and "--model" not in args  # the default
    done = subprocess.run([SCRIPT, *args[1:], "--seed", "5", "--quiet"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    out = tmp_path / args[args.index("--out") + 1]
    loaded = trimesh.load(out, force="mesh", process=False)
    x, y, z = np.asarray(loaded.vertices, dtype=np.float64).T
    linear = np.asarray(loaded.visual.vertex_colors)[:, :3] / 255.0  # glTF stores linear colour
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    mesh = MeshData.coerce(np.stack([x, -z, y], axis=1), np.asarray(loaded.faces),  # Y-up back to Z-up
                           np.round(srgb * 255).astype(np.uint8))
    assert_named_shape_and_colour(mesh, "cube", "red")
    assert_crisp(out.with_name(out.stem + ".checkpoint.safetensors"), mesh)


@pytest.mark.slow
def test_training_script_writes_a_camera_aware_prior_that_guides(tmp_path):
    from blender_dreamfusion.backend.toy import train

    folder = tmp_path / "toy"
    assert train.main(["--prior", "toy-shapes", "--steps", "3", "--images", "128", "--batch", "16",
                       "--sample-steps", "2", "--work", str(tmp_path / "work"), "--out", str(folder)]) == 0
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_camera_conditioning"] == "azimuth_harmonics_elevation_sincos"
    assert index["_recommended_spec"]["render_resolution"] == 32
    assert (folder / "samples.png").stat().st_size > 0
    guidance = load_guidance(str(folder), torch.device("cpu"))
    # Trained anywhere but the package's weights folder it is a plain camera-aware prior, as it always was.
    assert "_prior" not in index and type(guidance) is CameraAwarePixelGuidance and guidance.input_size == 32
    field = DensityField()
    cameras = make_cameras([0.0, 90.0], [10.0, 30.0], 1.8, 50.0)
    out = render(field, cameras, 32, shading="lambertian", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="camera-aware"):
        guidance.sds(out.rgb, ["a red cube"] * 2, [""] * 2, 10.0, (0.02, 0.98), torch.Generator())
    result = guidance.sds(out.rgb, ["a red cube, front view", "a red cube, side view"], [""] * 2, 10.0,
                          (0.02, 0.98), torch.Generator().manual_seed(0), cameras)
    result.loss.backward()
    assert any(float(g.grad.abs().sum()) > 0 for g in field.grids)
    # The built-in wrapper adds the vocabulary rules on top of the same model.
    toy = ToyGuidance(guidance.unet, guidance.text_encoder, guidance.tokenizer, guidance.scheduler,
                      guidance.device, guidance.dtype)
    assert toy.condition_prompt("a red cube, side view", "textureless") == "a cube, side view"
    assert toy.condition_prompt("a red cube, side view", "lambertian") == "a red cube, side view"
    with pytest.raises(VocabularyError):
        toy.check_prompt("a red dragon")


@pytest.mark.slow
def test_priors_trained_on_the_first_camera_features_still_load_and_mismatches_are_refused(tmp_path):
    from blender_dreamfusion.backend.toy import train
    from blender_dreamfusion.backend.toy.model import build_unet

    folder = tmp_path / "toy"
    assert train.main(["--prior", "toy-shapes", "--steps", "1", "--images", "32", "--batch", "8",
                       "--sample-steps", "1", "--sample-every", "0", "--work", str(tmp_path / "work"),
                       "--out", str(folder)]) == 0
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())

    def declare(conditioning):
        index_path.write_text(json.dumps({**index, "_camera_conditioning": conditioning}))

    declare("azimuth_elevation_sincos")  # 4 features, but this UNet takes the 8 it was trained on
    with pytest.raises(ModelLoadError, match="takes 8 camera features, but 'azimuth_elevation_sincos' makes 4"):
        load_guidance(str(folder), torch.device("cpu"))
    declare("plucker_rays")
    with pytest.raises(ModelLoadError, match="wants camera conditioning 'plucker_rays'.*'azimuth_elevation_sincos'"):
        load_guidance(str(folder), torch.device("cpu"))
    # A prior from before the harmonics (4 features) loads and guides with the features it was trained on.
    build_unet(4).save_pretrained(folder / "unet")
    declare("azimuth_elevation_sincos")
    guidance = load_guidance(str(folder), torch.device("cpu"))
    assert guidance.conditioning == "azimuth_elevation_sincos"
    cameras = make_cameras([0.0, 45.0], [10.0, 30.0], 1.8, 50.0)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    guidance.sds(images, ["a cube"] * 2, [""] * 2, 10.0, (0.02, 0.98), torch.Generator().manual_seed(0),
                 cameras).loss.backward()
    assert images.grad.abs().sum() > 0


def test_camera_features():
    old = camera_features(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 90.0]), "azimuth_elevation_sincos")
    assert torch.allclose(old, torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    # The harmonics tell a cube's face (0, 90 degrees) from its corner (45) in one feature: cos(4 az).
    new = camera_features(torch.tensor([0.0, 45.0, 90.0]), torch.tensor([20.0, 20.0, 20.0]))
    assert new.shape == (3, 8)
    assert torch.allclose(new[:, 5], torch.tensor([1.0, -1.0, 1.0]), atol=1e-6)
    assert torch.allclose(new[:, 6:], old.new_tensor([[0.34202, 0.93969]] * 3), atol=1e-5)

