"""The GPU acceptance run (bench/gpu_check.py) in its CPU fallback: every part runs and passes, so the command a
lent GPU runs is known to work up to the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_part_on_a_cpu_and_says_so():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the fallback even on a machine with a GPU
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu"],
                            capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], (report, result.stderr[-3000:])
    assert set(report["parts"]) == {"sd_sized_step", "generate_tiny_sd", "generate_sd_sized", "server_job",
                                    "toy_prior"}
    assert report["device"].startswith("cpu")
    for name in ("generate_tiny_sd", "generate_sd_sized", "toy_prior"):
        assert report["parts"][name]["glb"]["textured"] and report["parts"][name]["glb"]["triangles"] > 0
    assert report["parts"]["server_job"]["updates"] >= 1


def test_asking_for_cuda_without_a_gpu_says_so_in_json():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cuda"],
                            capture_output=True, text=True, env=env, timeout=120)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["device"] == "none" and "cuda" in report["error"]
