"""`dreamfusion-backend generate` end to end with a tiny model loaded from disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from blender_dreamfusion.backend.checkpoint import read_checkpoint_spec
from blender_dreamfusion.backend.cli import INTERRUPTED, main

SCRIPT = str(Path(sys.executable).with_name("dreamfusion-backend"))
FAST = ["--preset", "draft", "--render-resolution", "32", "--mesh-resolution", "48", "--seed", "5", "--quiet"]


def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def load_coloured(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, force="mesh", process=False)
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    colours = np.asarray(mesh.visual.vertex_colors)
    assert colours.shape == (len(mesh.vertices), 4)
    return mesh


@pytest.mark.slow
def test_generate_writes_glb_and_ply_with_vertex_colours(tiny_sd, tmp_path):
    out = tmp_path / "cube.glb"
    done = run("generate", "a red cube", "--model", str(tiny_sd), "--steps", "20", "--out", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "20 steps" in done.stdout
    load_coloured(out)
    checkpoint = tmp_path / "cube.checkpoint.safetensors"
    spec, step = read_checkpoint_spec(checkpoint)
    assert step == 20 and spec.prompt == "a red cube" and spec.seed == 5

    ply = tmp_path / "cube.ply"
    assert main(["generate", "a red cube", "--model", str(tiny_sd), "--steps", "20", "--out", str(ply), *FAST]) == 0
    load_coloured(ply)

    # Continue the first run from its checkpoint to 25 steps.
    more = tmp_path / "more.obj"
    assert main(["generate", "a red cube", "--model", str(tiny_sd), "--steps", "25", "--init", "checkpoint",
                 "--init-from", str(checkpoint), "--out", str(more), *FAST]) == 0
    assert read_checkpoint_spec(tmp_path / "more.checkpoint.safetensors")[1] == 25
    load_coloured(more)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_the_work(tiny_sd, tmp_path):
    snapshots = tmp_path / "snaps"
    out = tmp_path / "long.glb"
    process = subprocess.Popen([SCRIPT, "generate", "a red cube", "--model", str(tiny_sd), "--steps", "100000",
                                "--save-every", "3", str(snapshots), "--out", str(out), *FAST],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(snapshots.glob("step_000003.checkpoint.safetensors")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no snapshot before the deadline"
        time.sleep(0.1)  # polling a file, not synchronising on time
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == INTERRUPTED, stderr
    assert "stopping after this step" in stderr
    load_coloured(out)
    assert read_checkpoint_spec(tmp_path / "long.checkpoint.safetensors")[1] >= 3
    assert (snapshots / "step_000003.glb").exists()


def test_missing_model_offline_is_one_clear_line(tmp_path):
    done = run("generate", "a red cube", "--model", "nobody/no-such-model", "--steps", "2", "--quiet",
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "could not load model 'nobody/no-such-model'" in lines[0]
    assert "--model /path/to/folder" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--model", "./does/not/exist"], "model folder './does/not/exist' does not exist"),
    (["--device", "cuda"], "no CUDA device is available"),
    (["--out", "x.fbx"], "--out must end in .glb, .obj, .ply"),
    (["--init", "checkpoint", "--init-from", "/nope.safetensors"], "checkpoint '/nope.safetensors' does not exist"),
    (["--init", "mesh"], "init = mesh needs a start mesh: --init-from FILE"),
    (["--init", "mesh", "--init-from", "/nope.glb"], "init_from: '/nope.glb': no such file"),
    (["--init", "mesh", "--init-from", "cube.stl"], "a start mesh must be one of .glb, .gltf, .obj, .ply"),
])
def test_bad_input_exits_non_zero_with_one_line(argv, message, capsys, tiny_sd, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if "--model" not in argv:
        argv = ["--model", str(tiny_sd), *argv]
    if argv[-2:] != ["--device", "cuda"] and "cuda" in argv:
        pytest.skip("CUDA present")
    assert main(["generate", "a red cube", "--steps", "2", "--quiet", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_lock_geometry_needs_something_to_lock(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "a red cube", "--lock-geometry"])
    assert info.value.code == 2
    assert "--lock-geometry: lock_geometry = True" in capsys.readouterr().err


def test_bad_spec_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "a red cube", "--guidance-scale", "0"])
    assert info.value.code == 2
    assert "--guidance-scale: guidance_scale = 0.0 is out of range; allowed: a number from 1 to 500" in \
        capsys.readouterr().err
