"""A new prior or geometry is one new file: it registers itself and loads through the normal path."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest
import torch

from blender_dreamfusion.backend import geometry as geometry_package
from blender_dreamfusion.backend import guidance as guidance_package
from blender_dreamfusion.backend.checkpoint import load_field, save_checkpoint
from blender_dreamfusion.backend.geometry import GEOMETRIES, DensityConfig, SDFConfig, make_geometry
from blender_dreamfusion.backend.guidance import PRIORS, Guidance, ModelLoadError, load_guidance
from blender_dreamfusion.backend.guidance.camera_pixel import CameraAwarePixelGuidance
from blender_dreamfusion.backend.guidance.latent import LatentGuidance
from blender_dreamfusion.backend.guidance.loading import builtin_folder
from blender_dreamfusion.backend.guidance.pixel import PixelGuidance
from blender_dreamfusion.backend.guidance.registry import prior_name_for
from blender_dreamfusion.backend.guidance.toy import ToyGuidance
from blender_dreamfusion.backend.tiny_model import write_tiny_pixel_model
from blender_dreamfusion.backend.trainer import Trainer, TrainerConfig
from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.jobspec import GEOMETRY_NAMES

NEW_PRIOR = '''
    """A prior nobody else knows about: pixel guidance that also counts its calls."""

    from blender_dreamfusion.backend.guidance.pixel import PixelGuidance
    from blender_dreamfusion.backend.guidance.registry import register_prior


    @register_prior
    class CountingPixelGuidance(PixelGuidance):
        prior_name = "counting-pixel"
        calls = 0

        def predict_noise(self, x_t, t, text, cameras):
            type(self).calls += 1
            return super().predict_noise(x_t, t, text, cameras)
'''

NEW_GEOMETRY = '''
    """A geometry nobody else knows about: a density field with a bigger initial blob."""

    from dataclasses import dataclass
    from typing import ClassVar

    from blender_dreamfusion.backend.geometry.density import DensityConfig, DensityField
    from blender_dreamfusion.backend.geometry.registry import register_geometry


    @dataclass(frozen=True)
    class BigBlobConfig(DensityConfig):
        geometry: ClassVar[str] = "big-blob"
        blob_radius: float = 0.8


    @register_geometry
    class BigBlobField(DensityField):
        config_class = BigBlobConfig
'''


@pytest.fixture
def new_module_in(monkeypatch, tmp_path):
    """Put a module into a package's search path (as a new file in its folder would be) for one test."""
    added = []

    def add(package, name: str, source: str):
        folder = tmp_path / package.__name__.replace(".", "_")
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
        added.append(f"{package.__name__}.{name}")

    yield add
    for module in added:
        sys.modules.pop(module, None)


@pytest.fixture
def clean_registries():
    """What a test registers is gone after it."""
    by_pipeline = guidance_package.registry._BY_PIPELINE
    # Every module registered first: one imported during the test would be restored away, and never re-register.
    PRIORS.discover()
    GEOMETRIES.discover()
    saved = [(registry, dict(registry)) for registry in (PRIORS, GEOMETRIES, by_pipeline)]
    yield
    for registry, contents in saved:
        registry.clear()
        registry.update(contents)


def test_a_prior_in_a_new_module_loads_through_the_normal_path(tmp_path, new_module_in, clean_registries):
    new_module_in(guidance_package, "counting", NEW_PRIOR)
    folder = write_tiny_pixel_model(tmp_path / "counting-model")
    # Without a `_prior` the folder is what its parts say: no VAE, a pixel prior.
    assert type(load_guidance(str(folder), torch.device("cpu"))) is PixelGuidance
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_prior": "counting-pixel"}))
    guidance = load_guidance(str(folder), torch.device("cpu"))
    assert type(guidance).__name__ == "CountingPixelGuidance" and isinstance(guidance, PixelGuidance)
    assert guidance.prior_name == "counting-pixel" and "counting-pixel" in PRIORS
    # It really is the prior that scores: SDS goes through its predict_noise.
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    guidance.sds(images, ["a cube"], [""], 10.0, (0.02, 0.98), torch.Generator().manual_seed(0)).loss.backward()
    assert type(guidance).calls == 1 and images.grad.abs().sum() > 0


def test_a_model_asking_for_an_unknown_prior_is_told_which_there_are(tiny_sd, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_sd, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_prior": "imagen-9"}))
    with pytest.raises(ModelLoadError, match=r"asks for the prior 'imagen-9'; this backend knows .*'latent'.*"
                                             r"'toy-shapes'"):
        load_guidance(str(folder), torch.device("cpu"))
    # Naming a pixel prior for a latent model is refused before anything loads.
    (folder / "model_index.json").write_text(json.dumps({**index, "_prior": "pixel"}))
    with pytest.raises(ModelLoadError, match="has a VAE, so its UNet denoises latents, but it names the "
                                             "pixel-space prior 'pixel'"):
        load_guidance(str(folder), torch.device("cpu"))


def test_what_a_model_index_says_picks_the_prior():
    parts = {"unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"]}
    assert prior_name_for({**parts, "_class_name": "StableDiffusionPipeline"}) == "latent"
    assert prior_name_for({**parts, "_class_name": "DiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}) \
        == "latent"
    assert prior_name_for({**parts, "_class_name": "DiffusionPipeline"}) == "pixel"
    assert prior_name_for({**parts, "_camera_conditioning": "azimuth_elevation_sincos"}) == "camera-pixel"
    # Without a `_prior`, a VAE decides before camera conditioning, as before the registry.
    assert prior_name_for({**parts, "_camera_conditioning": "x", "vae": ["diffusers", "AutoencoderKL"]}) == "latent"
    assert prior_name_for({**parts, "_prior": "toy-shapes", "_camera_conditioning": "x"}) == "toy-shapes"
    assert {PRIORS[n] for n in ("latent", "pixel", "camera-pixel", "toy-shapes")} == \
        {LatentGuidance, PixelGuidance, CameraAwarePixelGuidance, ToyGuidance}
    # The built-in weights name their prior; nothing special-cases the built-in model any more.
    assert json.loads((builtin_folder("toy-shapes") / "model_index.json").read_text())["_prior"] == "toy-shapes"


def test_a_second_prior_under_a_taken_name_is_refused(clean_registries):
    from blender_dreamfusion.backend.guidance.registry import register_prior

    with pytest.raises(TypeError, match="'pixel' is taken by PixelGuidance"):
        register_prior(type("Impostor", (PixelGuidance,), {"prior_name": "pixel"}))
    with pytest.raises(TypeError, match="Nameless must name itself to be registered as a prior"):
        register_prior(type("Nameless", (PixelGuidance,), {}))
    with pytest.raises(TypeError, match="Spaceless must say its space"):
        register_prior(type("Spaceless", (Guidance,), {"prior_name": "spaceless"}))
    # A subclass does not inherit its parent's claim on a pipeline class.
    register_prior(type("Tweaked", (LatentGuidance,), {"prior_name": "tweaked-latent"}))
    assert prior_name_for({"_class_name": "StableDiffusionPipeline"}) == "latent"


def test_a_geometry_in_a_new_module_builds_trains_and_round_trips_a_checkpoint(tiny_sd, tmp_path, new_module_in,
                                                                               clean_registries):
    new_module_in(geometry_package, "big_blob", NEW_GEOMETRY)
    geometry_package.discover_geometries()
    field = make_geometry("big-blob")
    assert type(field).__name__ == "BigBlobField" and field.name == "big-blob" and field.config.blob_radius == 0.8
    # A JobSpec offers only the wire's choices (shared.jobspec.GEOMETRY_NAMES), so a geometry not yet offered
    # there runs from code: here it replaces a trainer's field, and the checkpoint's type tag brings it back.
    spec = JobSpec(prompt="a cube", model=str(tiny_sd), steps=2, render_resolution=16, mesh_resolution=16, seed=0,
                   geometry="density")
    trainer = Trainer(spec, load_guidance(str(tiny_sd), torch.device("cpu")),
                      config=TrainerConfig(occupancy_every=1))
    trainer.field = field
    path = save_checkpoint(trainer, tmp_path / "big.safetensors")
    loaded, _ = load_field(path)
    assert type(loaded).__name__ == "BigBlobField" and loaded.config == field.config


def test_the_registered_geometries_are_the_ones_the_wire_offers_and_configs_name_their_class():
    assert set(GEOMETRIES) == set(GEOMETRY_NAMES)
    for name, cls in GEOMETRIES.items():
        assert cls.config_class.geometry == name and type(cls.config_class().build()) is cls
    with pytest.raises(ValueError, match="builds the 'sdf' geometry, not 'density'"):
        make_geometry("density", SDFConfig())
    with pytest.raises(KeyError, match="geometry 'voxels' is unknown to this backend"):
        make_geometry("voxels")
    assert TrainerConfig().geometry_config("density") == DensityConfig()
    swapped = TrainerConfig().with_geometry_config(SDFConfig(radius=0.3)).with_geometry_config(SDFConfig(radius=0.4))
    assert swapped.geometry_config("sdf").radius == 0.4 and len(swapped.geometries) == 1
