"""DeepFloyd IF stage I as a prior: a tiny IF-shaped pipeline (IF's UNet layout with learned variance, a T5
encoder and tokenizer, IF's cosine schedule) written with `save_pretrained` and loaded the normal way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from blender_dreamfusion.backend.checkpoint import read_checkpoint_spec
from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.backend.guidance import ModelLoadError, load_guidance
from blender_dreamfusion.backend.guidance.deepfloyd import DeepFloydIFGuidance
from blender_dreamfusion.backend.tiny_model import write_tiny_if


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    return write_tiny_if(tmp_path_factory.mktemp("models") / "tiny-if")


def test_an_if_pipeline_loads_as_the_if_prior_with_its_own_schedule(tiny_if):
    from diffusers import DDPMScheduler

    index = json.loads((tiny_if / "model_index.json").read_text())
    assert index["_class_name"] == "IFPipeline" and index["tokenizer"] == ["transformers", "T5Tokenizer"]
    guidance = load_guidance(str(tiny_if), torch.device("cpu"))
    assert isinstance(guidance, DeepFloydIFGuidance) and guidance.space == "pixel" and guidance.input_size == 16
    cosine = DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000).alphas_cumprod
    assert torch.allclose(guidance.alphas_cumprod, cosine)  # IF's schedule, read from its folder
    text = guidance.embed_text(["a red cube", "a blue sphere"])
    assert text.shape == (2, 77, 32)
    noise = guidance.predict_noise(torch.zeros(2, 3, 16, 16), torch.tensor([10, 500]), text, None)
    assert noise.shape == (2, 3, 16, 16)  # epsilon only: the UNet's other 3 channels are the variance
    # T5 reads the prompt with its attention mask: the 70-odd pads change nothing of the words' encoding.
    tokens = guidance.tokenizer(["a red cube"], return_tensors="pt")
    alone = guidance.text_encoder(tokens.input_ids)[0][0]
    assert torch.allclose(text[0, : alone.shape[0]], alone, atol=1e-5)


def test_an_if_unet_of_the_wrong_width_is_refused(tiny_if, tmp_path):
    from diffusers import UNet2DConditionModel

    copy = tmp_path / "wrong"
    shutil.copytree(tiny_if, copy)
    config = dict(UNet2DConditionModel.load_config(copy / "unet"), out_channels=5)
    UNet2DConditionModel.from_config(config).save_pretrained(copy / "unet")
    with pytest.raises(ModelLoadError, match="returns 5 channels for 3 in"):
        load_guidance(str(copy), torch.device("cpu"))


def test_missing_if_weights_are_the_same_clear_error(tiny_if, tmp_path):
    copy = tmp_path / "no-t5"
    shutil.copytree(tiny_if, copy)
    for weights in (copy / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="could not load model folder .*no-t5"):
        load_guidance(str(copy), torch.device("cpu"))


def test_the_hub_if_model_offline_is_one_line_that_names_its_licence(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([str(Path(sys.executable).with_name("dreamfusion-backend")), "generate", "a red cube",
                           "--model", "DeepFloyd/IF-I-XL-v1.0", "--steps", "2", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "could not load model 'DeepFloyd/IF-I-XL-v1.0'" in lines[0] and "accept its licence" in lines[0]


@pytest.mark.slow
def test_generate_runs_on_the_if_prior_with_perp_neg_and_writes_a_coloured_mesh(tiny_if, tmp_path, capsys):
    out = tmp_path / "cube.glb"
    assert main(["generate", "a red cube", "--model", str(tiny_if), "--steps", "20", "--render-resolution", "32",
                 "--mesh-resolution", "48", "--seed", "5", "--perp-neg", "2", "--quiet", "--out", str(out)]) == 0
    assert "20 steps" in capsys.readouterr().out
    mesh = trimesh.load(out, force="mesh")
    colours = np.asarray(mesh.visual.vertex_colors)
    assert len(mesh.faces) > 0 and colours.shape == (len(mesh.vertices), 4)
    spec, step = read_checkpoint_spec(tmp_path / "cube.checkpoint.safetensors")
    # IF's recipe (CFG 20) applied under the flags given.
    assert step == 20 and spec.guidance_scale == 20.0 and spec.steps == 20 and spec.perp_neg == 2.0
