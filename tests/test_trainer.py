"""The SDS trainer with a tiny real Stable Diffusion: determinism, checkpoints, resume, streaming, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from blender_dreamfusion.backend.checkpoint import (CheckpointError, load_checkpoint, load_field, read_checkpoint_spec,
                                                    save_checkpoint)
from blender_dreamfusion.backend.extract import extract_mesh
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.trainer import Trainer, TrainerConfig, prompt_for_view
from blender_dreamfusion.shared import JobSpec, decode, encode

CONFIG = TrainerConfig(occupancy_every=4)


@pytest.fixture(scope="module")
def guidance(tiny_sd):
    return load_guidance(str(tiny_sd), torch.device("cpu"))


def spec(tiny_sd, **fields) -> JobSpec:
    base = dict(prompt="a red cube", model=str(tiny_sd), seed=3, steps=10, render_resolution=32,
                mesh_resolution=32, stream_every=4)
    base.update(fields)
    return JobSpec(**base)


def parameters(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.field.parameters()]


def test_the_guidance_loads_from_disk_as_latent(guidance, tiny_sd):
    assert guidance.prior_name == "latent" and guidance.space == "latent" and guidance.input_size == 16
    assert (Path(tiny_sd) / "model_index.json").exists()
    embeddings = guidance.embed_text(["a red cube, front view", "a red cube, front view"])
    assert embeddings.shape[0] == 2 and len(guidance._text_cache) == 1


def test_same_seed_same_result_and_training_changes_the_field(guidance, tiny_sd):
    a, b = Trainer(spec(tiny_sd), guidance, config=CONFIG), Trainer(spec(tiny_sd), guidance, config=CONFIG)
    before = parameters(a)
    a.run()
    b.run()
    assert all(torch.equal(x, y) for x, y in zip(parameters(a), parameters(b)))
    assert any(not torch.equal(x, y) for x, y in zip(before, parameters(a)))
    other = Trainer(spec(tiny_sd, seed=4), guidance, config=CONFIG)
    other.run()
    assert any(not torch.equal(x, y) for x, y in zip(parameters(a), parameters(other)))


@pytest.mark.parametrize("geometry", ["density", "sdf"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(guidance, tiny_sd, tmp_path, geometry):
    straight = Trainer(spec(tiny_sd, geometry=geometry), guidance, config=CONFIG)
    straight.run()

    first = Trainer(spec(tiny_sd, geometry=geometry), guidance, config=CONFIG)
    assert first.run(should_stop=lambda: first.step >= 5) is False  # schedules follow the whole run's length
    path = save_checkpoint(first, tmp_path / "job.checkpoint.safetensors")
    # The checkpoint's geometry wins over the continuing spec's: a job keeps the geometry it started with.
    other = "sdf" if geometry == "density" else "density"
    resumed = load_checkpoint(path, spec(tiny_sd, geometry=other), guidance, config=CONFIG)
    assert resumed.step == 5 and resumed.field.name == geometry and resumed.spec.geometry == geometry
    resumed.run()
    assert resumed.step == 10
    for x, y in zip(parameters(straight), parameters(resumed)):
        assert torch.allclose(x, y, atol=1e-6, rtol=1e-5)
    assert torch.equal(straight.occupancy.mask, resumed.occupancy.mask)


def test_checkpoint_is_safetensors_with_spec_and_rng(guidance, tiny_sd, tmp_path):
    trainer = Trainer(spec(tiny_sd, steps=2), guidance, config=CONFIG)
    trainer.run()
    path = save_checkpoint(trainer, tmp_path / "a" / "ckpt.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.safetensors"]  # no temp file left behind
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "rng" in keys and any(k.startswith("field.shape_grids") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert meta["geometry"] == "sdf"
    assert json.loads(meta["spec"])["seed"] == 3
    restored, step = read_checkpoint_spec(path)
    assert restored == trainer.spec and step == 2


@pytest.mark.parametrize("geometry", ["density", "sdf"])
def test_a_checkpoint_field_alone_extracts_the_trainers_mesh(guidance, tiny_sd, tmp_path, geometry):
    trainer = Trainer(spec(tiny_sd, steps=4, geometry=geometry), guidance, config=TrainerConfig(occupancy_every=1))
    trainer.run()
    field, occupancy = load_field(save_checkpoint(trainer, tmp_path / "ckpt.safetensors"))
    assert field.name == geometry
    assert occupancy.occupied_fraction() < 1.0  # the trained grid, not a fresh all-occupied one
    assert torch.equal(occupancy.mask, trainer.occupancy.mask)
    expected = trainer.snapshot(preview=False).extraction.mesh
    mesh = extract_mesh(field, trainer.spec.mesh_resolution, occupancy).mesh
    assert mesh.vertex_count > 0 and (mesh.positions == expected.positions).all()


def test_a_checkpoint_from_before_the_geometry_knob_loads_as_a_density_field(guidance, tiny_sd, tmp_path):
    from safetensors.torch import load_file, save_file

    trainer = Trainer(spec(tiny_sd, steps=2, geometry="density"), guidance, config=CONFIG)
    trainer.run()
    path = save_checkpoint(trainer, tmp_path / "new.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    del meta["geometry"]
    old_spec = json.loads(meta["spec"])
    del old_spec["geometry"]
    meta["spec"] = json.dumps(old_spec)
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    restored, _ = read_checkpoint_spec(tmp_path / "old.safetensors")
    assert restored.geometry == "density"
    resumed = load_checkpoint(tmp_path / "old.safetensors", spec(tiny_sd, geometry="sdf"), guidance, config=CONFIG)
    assert resumed.field.name == "density"
    assert all(torch.equal(x, y) for x, y in zip(parameters(trainer), parameters(resumed)))


def test_a_broken_checkpoint_is_a_clear_error(guidance, tiny_sd, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad, spec(tiny_sd), guidance)


def test_streaming_callback_and_stop(guidance, tiny_sd):
    streamed, steps = [], []
    trainer = Trainer(spec(tiny_sd, steps=9, stream_every=3), guidance, config=CONFIG)
    finished = trainer.run(on_step=lambda s: steps.append(s.step), on_stream=streamed.append)
    assert finished and [s.step for s in streamed] == [3, 6] and steps == list(range(1, 10))
    update = streamed[-1].as_update("job-7")
    frames = encode(update)  # a valid protocol message, preview included
    assert decode(frames) == update and update.preview.pixels.shape == (96, 96, 3)
    assert update.steps == 9 and update.mesh.vertex_count > 0
    stopper = Trainer(spec(tiny_sd, steps=9), guidance, config=CONFIG)
    assert stopper.run(should_stop=lambda: stopper.step >= 4) is False
    assert stopper.step == 4


def test_view_dependent_prompts_reach_the_prior(guidance, tiny_sd):
    guidance._text_cache.clear()
    Trainer(spec(tiny_sd, steps=12, camera_azimuth=(-180.0, 180.0)), guidance, config=CONFIG).run()
    views = {p.rsplit(", ", 1)[1] for p in guidance._text_cache if ", " in p}
    assert len(views) >= 2 and views <= {"front view", "side view", "back view", "overhead view"}
    assert prompt_for_view("a cube", "side") == "a cube, side view"


def test_several_views_per_step_and_annealed_noise_levels(guidance, tiny_sd):
    trainer = Trainer(spec(tiny_sd, steps=4, views_per_step=3, t_range=(0.1, 0.9), t_anneal=0.5), guidance,
                      config=CONFIG)
    assert trainer.t_range() == (0.1, 0.9)
    trainer.run()
    low, high = trainer.t_range()
    assert low == 0.1 and high == pytest.approx(0.9 - 0.5 * 0.8)
    assert trainer.step == 4
