"""Latent and pixel priors load through the same `from_pretrained` path from folders written to disk."""

from __future__ import annotations

import json

import pytest
import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.geometry import DensityField
from blender_dreamfusion.backend.guidance import ModelLoadError, load_guidance
from blender_dreamfusion.backend.guidance.latent import LatentGuidance
from blender_dreamfusion.backend.guidance.pixel import PixelGuidance
from blender_dreamfusion.backend.renderer import render
from blender_dreamfusion.backend.tiny_model import write_tiny_pixel_model


@pytest.fixture(scope="module")
def tiny_pixel(tmp_path_factory):
    return write_tiny_pixel_model(tmp_path_factory.mktemp("models") / "tiny-pixel")


def sds_reaches_the_field(guidance) -> None:
    field = DensityField()
    out = render(field, make_cameras(0.0, 10.0, 1.8, 50.0), 32, shading="lambertian",
                 generator=torch.Generator().manual_seed(0))
    result = guidance.sds(out.rgb, ["a red cube, front view"], [""], 50.0, (0.02, 0.98),
                          torch.Generator().manual_seed(0))
    result.loss.backward()
    assert result.value > 0 and torch.isfinite(result.loss)
    assert any(float(g.grad.abs().sum()) > 0 for g in field.grids)


def test_latent_model_loads_and_its_sds_reaches_the_field(tiny_sd):
    guidance = load_guidance(str(tiny_sd), torch.device("cpu"))
    assert isinstance(guidance, LatentGuidance) and guidance.input_size == 16
    assert not any(p.requires_grad for p in guidance.unet.parameters())
    sds_reaches_the_field(guidance)


def test_pixel_model_without_vae_loads_as_pixel_guidance(tiny_pixel):
    guidance = load_guidance(str(tiny_pixel), torch.device("cpu"))
    assert isinstance(guidance, PixelGuidance) and guidance.input_size == 16
    noise = guidance.predict_noise(torch.zeros(2, 3, 16, 16), torch.tensor([10, 10]),
                                   guidance.embed_text(["a", "b"]), None)
    assert noise.shape == (2, 3, 16, 16)  # the variance half of IF-style output is dropped
    sds_reaches_the_field(guidance)


def test_a_component_from_an_unknown_library_is_refused(tiny_pixel, tmp_path):
    import shutil

    copy = tmp_path / "evil"
    shutil.copytree(tiny_pixel, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["unet"] = ["os", "system"]
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="only diffusers, transformers components are loaded"):
        load_guidance(str(copy), torch.device("cpu"))


def test_a_folder_that_is_not_a_diffusion_model(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers",
                                                                                     "UNet2DConditionModel"]}))
    with pytest.raises(ModelLoadError, match="has no text_encoder, tokenizer, scheduler: it is not a text-to-image"):
        load_guidance(str(tmp_path), torch.device("cpu"))
