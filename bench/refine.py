"""Refinement costs: taking in a start mesh, texture-only steps against full ones, colour-only updates in Blender.

    .venv/bin/python bench/refine.py [--steps 20] [--no-blender]

Prints one JSON object:
- `fit`: per mesh size (about 10k and 100k triangles: a sphere, a torus and a box, apart), seconds to take the
  mesh in (scene mapping, signed-distance grid, start colours: `Trainer.start_from_mesh`) and the symmetric
  Chamfer distance of the mesh extracted right after (before any step) to the input, as a share of the
  input's bounding-box diagonal, with the mean colour error (0-255), for the sdf and density geometries;
- `steps_per_s`: the toy prior at its recommended settings on a start mesh, texture-only (`lock_geometry`)
  against a full run, alternating blocks of `--steps` steps in the same process so drift hits both alike;
- `blender`: main-thread ms of a full update and of a colour-only update at 100k vertices
  (bench/blender_apply.py, run beside this, PyPI bpy);
- with `--quality SEED ...`: per seed, a texture-only run (a grey start mesh, a colour prompt, 150 steps) and
  a re-prompt (a red cube taken in as a finished 5-step "a red cube" job, continued 200 steps as another
  colour), each with the hue error of its mean colour (degrees) and, for the re-prompt, the nearest toy shape.
  The tests use seeds 21 and 31/32; pass others to see how it does on seeds nobody looked at.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from blender_dreamfusion.backend.checkpoint import load_checkpoint, save_checkpoint
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.mesh_metrics import bounding_diagonal, chamfer, colour_error
from blender_dreamfusion.backend.trainer import Trainer
from blender_dreamfusion.shared import JobSpec, MeshData
from blender_dreamfusion.shared.recommended import builtin_recommendations


def scene_mesh(subdivisions: int, sections: int) -> MeshData:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.6).apply_translation([-1.0, 0.0, 0.0])
    torus = trimesh.creation.torus(0.5, 0.15, sections, sections // 2).apply_translation([0.6, 0.0, 0.0])
    box = trimesh.creation.box([0.6, 0.6, 0.6]).apply_translation([0.0, 1.2, 0.3])
    both = trimesh.util.concatenate([sphere, torus, box])
    positions = np.asarray(both.vertices, np.float32)
    low, high = positions.min(0), positions.max(0)
    rgb = ((positions - low) / (high - low) * 180 + 40).astype(np.uint8)
    return MeshData.coerce(positions, both.faces, np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1))


def fit_figures(mesh: MeshData, geometry: str) -> dict:
    spec = JobSpec(prompt="a red cube", init="mesh", steps=10, mesh_resolution=128, geometry=geometry, seed=1)
    trainer = Trainer(spec, guidance=None)
    start = time.perf_counter()
    trainer.start_from_mesh(mesh)
    seconds = time.perf_counter() - start
    out = trainer.snapshot(preview=False).extraction.mesh
    return {"geometry": geometry, "triangles": mesh.triangle_count, "fit_s": round(seconds, 2),
            "chamfer_share_of_diagonal": round(chamfer(out, mesh) / bounding_diagonal(mesh), 5),
            "colour_error": round(colour_error(out, mesh), 2)}


def steps_per_second(steps: int, rounds: int) -> dict:
    guidance = load_guidance("toy-shapes", torch.device("cpu"))
    box = trimesh.creation.box([2.0, 2.0, 2.0]).subdivide().subdivide().subdivide()
    mesh = MeshData.coerce(box.vertices, box.faces, np.full((len(box.vertices), 4), 128, np.uint8))
    trainers = {}
    for lock in (True, False):
        spec = JobSpec.from_dict({**builtin_recommendations("toy-shapes"), "prompt": "a red cube", "init": "mesh",
                                  "lock_geometry": lock, "steps": 10 * steps * rounds, "seed": 2})
        trainers["texture_only" if lock else "full"] = trainer = Trainer(spec, guidance)
        trainer.start_from_mesh(mesh)
        trainer.train_step()  # warm-up
    seconds = {name: 0.0 for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            seconds[name] += time.perf_counter() - start
    rates = {name: round(steps * rounds / s, 2) for name, s in seconds.items()}
    return {**rates, "ratio_texture_only_to_full": round(rates["texture_only"] / rates["full"], 2)}


QUALITY_CASES = [("sphere", "green"), ("cube", "blue"), ("cylinder", "yellow"), ("torus", "purple")]


def primitive_mesh(shape: str, colour=(128, 128, 128, 255)) -> MeshData:
    made = {"sphere": lambda: trimesh.creation.icosphere(subdivisions=4, radius=0.9),
            "cube": lambda: trimesh.creation.box([1.6, 1.6, 1.6]).subdivide().subdivide().subdivide(),
            "cylinder": lambda: trimesh.creation.cylinder(radius=0.8, height=1.7, sections=64),
            "torus": lambda: trimesh.creation.torus(0.8, 0.34, 64, 32)}[shape]()
    return MeshData.coerce(np.asarray(made.vertices) + (2.0, -1.0, 0.5), made.faces,
                           np.tile(np.array(colour, np.uint8), (len(made.vertices), 1)))


def quality(seeds: list[int]) -> list[dict]:
    from blender_dreamfusion.backend.toy.quality import hue_error, shape_distances

    guidance = load_guidance("toy-shapes", torch.device("cpu"))
    base = {**builtin_recommendations("toy-shapes"), "mesh_resolution": 64}
    rows = []
    for index, seed in enumerate(seeds):
        shape, colour = QUALITY_CASES[index % len(QUALITY_CASES)]
        grey = primitive_mesh(shape)
        spec = JobSpec.from_dict({**base, "prompt": f"a {colour} {shape}", "init": "mesh", "lock_geometry": True,
                                  "steps": 150, "seed": seed})
        trainer = Trainer(spec, guidance)
        trainer.start_from_mesh(grey)
        trainer.run()
        out = trainer.snapshot(preview=False).extraction.mesh
        rows.append({"run": "texture_only", "prompt": spec.prompt, "seed": seed,
                     "same_mesh": bool(np.array_equal(out.positions, grey.positions)),
                     "hue_error": hue_error(out, colour)})
        parent = Trainer(JobSpec.from_dict({**base, "prompt": "a red cube", "init": "mesh", "steps": 5,
                                            "seed": seed}), guidance)
        parent.start_from_mesh(primitive_mesh("cube", (200, 40, 40, 255)))
        parent.run()
        with tempfile.TemporaryDirectory() as folder:
            path = save_checkpoint(parent, Path(folder) / "parent.safetensors")
            child_spec = JobSpec.from_dict({**base, "prompt": f"a {colour} cube", "init": "checkpoint",
                                            "init_from": str(path), "steps": 205, "seed": seed + 1})
            child = load_checkpoint(path, child_spec, guidance, resume=False)
        child.run()
        out = child.snapshot(preview=False).extraction.mesh
        distances = shape_distances(out)
        rows.append({"run": "re_prompt", "prompt": f"a red cube -> {child_spec.prompt}", "seed": seed + 1,
                     "nearest": min(distances, key=distances.get), "hue_error": hue_error(out, colour)})
        print(json.dumps(rows[-2]), json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def blender_figures() -> dict:
    script = Path(__file__).with_name("blender_apply.py")
    done = subprocess.run([sys.executable, str(script), "--repeats", "7"], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    big = next((line for line in lines if line.get("vertices", 0) >= 100_000), None)
    if big is None or "colour_only_update_ms" not in big:
        return {"error": "bench/blender_apply.py printed no 100k-vertex line with colour_only_update_ms"}
    return {"vertices": big["vertices"], "full_update_ms": big["full_update_ms"],
            "colour_only_update_ms": big["colour_only_update_ms"],
            "ratio": round(big["full_update_ms"] / max(1e-9, big["colour_only_update_ms"]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per variant")
    parser.add_argument("--no-blender", action="store_true", help="skip the Blender update timing")
    parser.add_argument("--quality", type=int, nargs="*", default=[], metavar="SEED",
                        help="also run texture-only and re-prompt jobs on these seeds")
    parser.add_argument("--only-quality", action="store_true", help="run only the --quality runs")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out: dict = {}
    if not args.only_quality:
        out["fit"] = [fit_figures(scene_mesh(s, n), g) for s, n in ((4, 64), (6, 150)) for g in ("sdf", "density")]
        out["steps_per_s"] = steps_per_second(args.steps, args.rounds)
        if not args.no_blender:
            out["blender"] = blender_figures()
    if args.quality:
        out["quality"] = quality(args.quality)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
