"""The GPU acceptance run: every path a job takes on CUDA, in one command, with pass/fail per part. Prints JSON.

    .venv/bin/python bench/gpu_check.py                 # CUDA when there is one, else the CPU fallback
    .venv/bin/python bench/gpu_check.py --device cpu    # the CPU fallback (CI runs it: tests/test_gpu_check.py)

Parts (each timed; one failing does not stop the others):
- `sd_sized_step`: the SDS step against a Stable-Diffusion-1.5-sized prior with random weights (`sd_sized.py`):
  fp16 on CUDA at full size (steps/s, the split of a step, peak GPU memory, the projected time of 10k steps);
- `generate_tiny_sd`: `generate` end to end with a tiny SD loaded through `from_pretrained`, to a textured glb;
- `generate_sd_sized`: the same with the SD-sized random prior written as a pipeline folder and loaded by path
  (on a CPU: its reduced widths);
- `server_job`: a job through the real service (`serve`'s Server, a job process, ZeroMQ on 127.0.0.1);
- `toy_prior`: the built-in `toy-shapes` prior.
On CUDA the whole run takes a few minutes (the SD-sized model is built and written once, ~2 GB).
Exit status 0 when every part passed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from blender_dreamfusion.addon_core.glb import glb_document
from blender_dreamfusion.backend.generate import generate
from blender_dreamfusion.backend.tiny_model import write_tiny_sd
from blender_dreamfusion.shared import JobSpec

sys.path.insert(0, str(Path(__file__).parent))
import sd_sized  # noqa: E402 - a sibling bench module

#: Steps per part: (on CUDA, on the CPU fallback).
STEPS = {"sd_sized_step": (20, 2), "generate": (100, 4), "server_job": (60, 4), "toy_prior": (200, 4)}


def glb_summary(path: Path) -> dict:
    """What a glb holds: triangles and whether a base-colour texture is bound (read from its JSON chunk)."""
    data = path.read_bytes()
    gltf = glb_document(data)
    materials = gltf.get("materials", [])
    textured = any("baseColorTexture" in m.get("pbrMetallicRoughness", {}) for m in materials)
    triangles = sum(gltf["accessors"][p["indices"]]["count"] // 3
                    for mesh in gltf.get("meshes", []) for p in mesh["primitives"] if "indices" in p)
    return {"bytes": len(data), "triangles": triangles, "textured": textured}


def run_generate(spec: JobSpec, out: Path, device: str) -> dict:
    result = generate(spec, out, device=device, show_progress=False)
    if result.out is None:
        raise RuntimeError(f"no mesh written: {result.extraction.message}")
    glb = glb_summary(result.out)
    if not glb["textured"] or not glb["triangles"]:
        raise RuntimeError(f"the glb is not a textured mesh: {glb}")
    return {"steps": result.steps, "seconds": round(result.seconds, 1), "steps_per_s":
            round(result.steps / max(1e-9, result.seconds), 2), "glb": glb}


def asset_spec(model: str, steps: int, cuda: bool, **extra) -> JobSpec:
    return JobSpec(prompt="a red cube", model=model, seed=0, steps=steps, stream_every=0,
                   mesh_resolution=128 if cuda else 32, face_count=20_000 if cuda else 500,
                   texture_size=1024 if cuda else 512, **extra)


def server_job(model: Path, steps: int, device: str, data: Path) -> dict:
    from blender_dreamfusion.backend.server.service import Server, ServerConfig
    from blender_dreamfusion.shared import Failed, Finished, Update
    from blender_dreamfusion.shared.client import BackendClient

    server = Server(ServerConfig(bind="tcp://127.0.0.1:0", data_dir=data, device=device, allow_paths=(model.parent,)))
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    try:
        with BackendClient(server.endpoint) as client:
            start = time.perf_counter()
            spec = JobSpec(prompt="a red cube", model=str(model), seed=0, steps=steps, stream_every=max(1, steps // 4),
                           mesh_resolution=64, texture_size=512)
            job = client.request(client.submit(spec)).job_id
            updates, deadline = 0, start + 300.0
            while time.perf_counter() < deadline:
                for event in client.poll(0.2):
                    if isinstance(event, Update) and event.job_id == job:
                        updates += 1
                    elif isinstance(event, Failed) and event.job_id == job:
                        raise RuntimeError(f"the job failed: {event.reason}")
                    elif isinstance(event, Finished) and event.job_id == job:
                        if event.texture is None or "glb" not in event.files:
                            raise RuntimeError(f"finished without a textured result: {sorted(event.files)}")
                        return {"steps": event.step, "updates": updates, "seconds": round(time.perf_counter() - start, 1)}
            raise RuntimeError("the job did not finish within 300 s")
    finally:
        server.stop()
        loop.join(60)


def part(name: str, fn: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        out = {"ok": True, **fn()}
    except Exception as exc:  # noqa: BLE001 - a failing part is reported, and the others still run
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out["wall_s"] = round(time.perf_counter() - start, 1)
    gc.collect()  # the part's prior and trainers go before the next part builds its own
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(f"gpu_check: {name}: {'ok' if out['ok'] else 'FAILED'} in {out['wall_s']} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu_check", "device": "none", "passed": False,
                          "error": "--device cuda: torch.cuda.is_available() is False on this machine"}))
        return 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    pick = (lambda key: STEPS[key][0 if cuda else 1])  # noqa: E731
    started = time.perf_counter()
    parts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        tiny = write_tiny_sd(tmp / "tiny-sd")
        parts["sd_sized_step"] = part("sd_sized_step", lambda: sd_sized.run(
            torch.device(device), pick("sd_sized_step"), 3 if cuda else 1))
        parts["generate_tiny_sd"] = part("generate_tiny_sd", lambda: run_generate(
            asset_spec(str(tiny), pick("generate"), cuda, render_resolution=64 if cuda else 32), tmp / "tiny.glb",
            device))

        def sd_sized_generate() -> dict:
            model = sd_sized.write_model(tmp / "sd-sized", torch.device(device), "full" if cuda else "reduced")
            return run_generate(asset_spec(str(model), pick("generate"), cuda, render_resolution=64 if cuda else 32),
                                tmp / "sd-sized.glb", device)

        parts["generate_sd_sized"] = part("generate_sd_sized", sd_sized_generate)
        parts["server_job"] = part("server_job", lambda: server_job(tiny, pick("server_job"), device, tmp / "data"))
        parts["toy_prior"] = part("toy_prior", lambda: run_generate(
            asset_spec("toy-shapes", pick("toy_prior"), cuda), tmp / "toy.glb", device))
    result = {
        "bench": "gpu_check",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA device: the CPU fallback)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "passed": all(p["ok"] for p in parts.values()),
        "wall_s": round(time.perf_counter() - started, 1),
        "parts": parts,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
