"""Model-aware recommendations: Stable Diffusion and DeepFloyd IF recipes, applied at every edge under the
preset and the values given; and the SD-sized step-time bench, which CI runs at reduced size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.shared import CLIENT_TYPES, JobSpec, decode
from blender_dreamfusion.shared.recommended import FAMILY_RECOMMENDATIONS, model_family, recommendations
from blender_dreamfusion.shared.version import PROTOCOL_TAG

ROOT = Path(__file__).resolve().parents[1]
SD = FAMILY_RECOMMENDATIONS["stable-diffusion"]
IF = FAMILY_RECOMMENDATIONS["deepfloyd-if"]


@pytest.mark.parametrize("model, family", [
    ("runwayml/stable-diffusion-v1-5", "stable-diffusion"),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion"),
    ("CompVis/stable-diffusion-v1-4", "stable-diffusion"),
    ("stabilityai/stable-diffusion-2-1-base", "stable-diffusion"),
    ("stabilityai/stable-diffusion-2-1", "stable-diffusion"),
    ("DeepFloyd/IF-I-XL-v1.0", "deepfloyd-if"),
    ("deepfloyd/if-i-m-v1.0", "deepfloyd-if"),
    ("stabilityai/stable-diffusion-xl-base-1.0", None),   # another recipe; not guessed
    ("stabilityai/stable-diffusion-3-medium", None),
    ("DeepFloyd/IF-II-L-v1.0", None),                    # an upscaler, not a prior
    ("someone/a-model", None),
])
def test_hub_models_are_told_by_name(model, family):
    assert model_family(model) == family
    assert recommendations(model) == ({} if family is None else FAMILY_RECOMMENDATIONS[family])


def test_folders_are_told_by_their_pipeline_and_their_own_recommendations_come_first(tiny_sd, tmp_path):
    assert model_family(str(tiny_sd)) == "stable-diffusion" and recommendations(str(tiny_sd)) == SD
    own = tmp_path / "own"
    own.mkdir()
    (own / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                      "_recommended_spec": {"guidance_scale": 50.0}}))
    assert recommendations(str(own)) == {"guidance_scale": 50.0}
    # A folder's path says nothing: one named like SD but holding no SD pipeline gets no recipe.
    odd = tmp_path / "stable-diffusion-v1-5"
    odd.mkdir()
    (odd / "model_index.json").write_text(json.dumps({"_class_name": "Other"}))
    assert recommendations(str(odd)) == {}
    # Nothing readable, or not a model at all: nothing recommended, never an exception.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model_index.json").write_text("{not json")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "fifo-model").mkdir()
    os.mkfifo(tmp_path / "fifo-model" / "model_index.json")  # would block a plain read
    for model in (str(tmp_path / "bad"), str(tmp_path / "missing"), str(tmp_path / "fifo-model"), "/\udcff",
                  "/x\0y", 12, None, ["a"], {"b": 1}, "./" + "x" * 5000):
        assert recommendations(model) == {}, model


def _spec(capsys, *argv: str) -> dict:
    assert main(["spec", "a red cube", "--seed", "1", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_cli_applies_the_sd_recipe_for_an_sd_folder_unless_a_flag_overrides(tiny_sd, capsys):
    spec = _spec(capsys, "--model", str(tiny_sd))
    assert {k: spec[k] for k in SD} == SD and SD["steps"] != JobSpec(prompt="x").steps
    spec = _spec(capsys, "--model", str(tiny_sd), "--guidance-scale", "7.5", "--steps", "300")
    assert (spec["guidance_scale"], spec["steps"], spec["stream_every"]) == (7.5, 300, SD["stream_every"])
    spec = _spec(capsys, "--model", str(tiny_sd), "--preset", "draft")  # the preset sits above the recipe
    assert (spec["steps"], spec["guidance_scale"]) == (1000, SD["guidance_scale"])
    spec = _spec(capsys, "--model", "DeepFloyd/IF-I-XL-v1.0")
    assert spec["guidance_scale"] == IF["guidance_scale"] == 20.0


def _submit(spec: dict):
    header = {"type": "submit", "request_id": "r1", "spec": spec}
    return decode([PROTOCOL_TAG, json.dumps(header).encode()], accept=CLIENT_TYPES).spec


def _submit_to(server, spec: dict):
    """A partial submit (a script's), sent as raw frames; the server's reply."""
    import zmq

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(server.endpoint)
    try:
        socket.send_multipart([PROTOCOL_TAG, json.dumps({"type": "submit", "request_id": "r1", "spec": spec}).encode()])
        assert socket.poll(30_000)
        return decode(socket.recv_multipart())
    finally:
        socket.close(0)


def test_the_server_fills_what_a_submit_leaves_out_from_the_models_recipe(tiny_sd, tmp_path, monkeypatch):
    from blender_dreamfusion.shared import recommended
    from tests.helpers.servers import ThreadServer

    # Decoding fills what needs no file (a hub id's family, a preset); a full spec (the add-on's) is taken as it is.
    spec = _submit({"prompt": "a red cube", "model": "DeepFloyd/IF-I-XL-v1.0", "preset": "draft"})
    assert (spec.guidance_scale, spec.steps) == (20.0, 1000)
    full = JobSpec(prompt="a red cube", model=str(tiny_sd), seed=3, guidance_scale=9.0).to_dict()
    assert _submit(full).to_dict() == full
    read = []
    monkeypatch.setattr(recommended, "_local_index", lambda model, real=recommended._local_index:
                        read.append(model) or real(model))
    spec = _submit({"prompt": "a red cube", "model": str(tiny_sd), "steps": 40})
    assert read == [] and spec.guidance_scale == JobSpec(prompt="x").guidance_scale  # no folder read while decoding

    # The server reads a local folder's recipe only once its path policy allowed the folder, and fills with it
    # only the fields the submit left out.
    allowed = ThreadServer(tmp_path / "allowed", allow_paths=(tiny_sd.parent,))
    try:
        reply = _submit_to(allowed, {"prompt": "a red cube", "model": str(tiny_sd), "steps": 40})
        assert reply.TYPE == "accepted", reply
        assert (reply.spec.guidance_scale, reply.spec.stream_every, reply.spec.steps) == (
            SD["guidance_scale"], SD["stream_every"], 40)
        assert read == [str(tiny_sd)]
    finally:
        allowed.stop()
    # A folder recommending what a spec cannot be: refused at submit, naming the field and where it came from.
    odd = tmp_path / "odd-model"
    odd.mkdir()
    (odd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                      "_recommended_spec": {"steps": -5}}))
    strict = ThreadServer(tmp_path / "strict", allow_paths=(odd,))
    try:
        reply = _submit_to(strict, {"prompt": "a red cube", "model": str(odd)})
        assert reply.TYPE == "rejected" and reply.field == "steps", reply
        assert "recommended" in reply.reason and "-5" in reply.reason, reply.reason
        reply = _submit_to(strict, {"prompt": "a red cube", "model": str(odd), "steps": 30})  # given: not filled
        assert reply.TYPE == "accepted" and reply.spec.steps == 30, reply
    finally:
        strict.stop()
    elsewhere = ThreadServer(tmp_path / "elsewhere", allow_paths=(tmp_path / "nothing-here",))
    try:
        read.clear()
        reply = _submit_to(elsewhere, {"prompt": "a red cube", "model": str(tiny_sd), "steps": 40})
        assert reply.TYPE == "rejected" and reply.field == "model", reply
        assert read == []  # refused without a look inside the folder
    finally:
        elsewhere.stop()


def test_the_batch_plans_each_row_with_its_models_recipe(tiny_sd, tmp_path):
    from blender_dreamfusion.addon_core.batch_plan import plan_batch
    from blender_dreamfusion.addon_core.prompt_file import read_prompt_file

    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in (
        {"prompt": "a red cube"},
        {"prompt": "a blue cube", "model": "DeepFloyd/IF-I-XL-v1.0"},
        {"prompt": "a green cube", "guidance_scale": 30.0})) + "\n")
    items, bad = plan_batch(read_prompt_file(path), {"model": str(tiny_sd), "steps": 50}, None, recommendations)
    assert not bad
    assert [(i.spec.guidance_scale, i.spec.steps) for i in items] == [(100.0, 50), (20.0, 50), (30.0, 50)]


def _bench(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "step_time.py"), "--model", "sd-sized", *argv],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_the_sd_sized_bench_runs_reduced_on_a_cpu_and_prints_its_split():
    done = _bench("--steps", "2", "--warmup", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bench"] == "step_time_sd_sized" and result["guidance_resolution"] == 128
    for variant in result["variants"].values():
        assert set(variant["phase_ms_median"]) >= {"render", "guidance", "backward", "vae_encode", "unet"}
        assert variant["steps_per_s"] > 0 and variant["projected_minutes_for_10k_steps"] > 0
    assert result["perp_neg_over_plain_step_time"] > 0


def test_the_cuda_bench_without_a_gpu_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = _bench("--device", "cuda")
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "--device cuda needs an NVIDIA GPU" in done.stderr
