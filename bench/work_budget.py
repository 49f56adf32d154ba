"""What the work budgets predict against what the work costs (backend/work_budget.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/work_budget.py [--hostile 100 300] [--bake-size 2048]

Prints one JSON object:
- `fit`: per mesh, its triangles, `fit_work` (the budget's units) and the seconds libigl takes to fit it
  (`mesh_signed_distance` at 128^3, in one piece; the check itself is timed as `check_s`): an 82k- and a
  330k-triangle sphere, and random triangles spanning the mesh (the hostile kind) at the counts given, each
  run in a child process killed after `--limit` seconds (then `seconds` is null);
- `ns_per_unit`: the hostile meshes' seconds over their units, less the sphere's fixed cost;
- `bake`: the hostile UV cube (12 triangles, UVs 0..9999) and a sphere's own atlas at `--bake-size`: texels
  touched (`bake_work`), the bake's seconds and its peak memory (tracemalloc, MB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import tracemalloc

import numpy as np
import trimesh

from blender_dreamfusion.backend.asset.atlas import uv_atlas
from blender_dreamfusion.backend.asset.bake import bake
from blender_dreamfusion.backend.geometry.mesh_distance import mesh_signed_distance
from blender_dreamfusion.backend.scene_mapping import SceneMapping
from blender_dreamfusion.backend.work_budget import WorkBudget, bake_work, fit_work


def _mesh(kind: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "sphere":
        shape = trimesh.creation.icosphere(subdivisions=count)
        return np.asarray(shape.vertices), np.asarray(shape.faces)
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (3 * count, 3)), np.arange(3 * count).reshape(-1, 3)


def _fit(kind: str, count: int, out) -> None:
    positions, triangles = _mesh(kind, count)
    scene = SceneMapping.framing(positions).to_scene(positions)
    started = time.perf_counter()
    mesh_signed_distance(scene, triangles, 1.0, 128, should_stop=None)
    out.put(time.perf_counter() - started)


def fit_row(kind: str, count: int, limit: float) -> dict:
    positions, triangles = _mesh(kind, count)
    started = time.perf_counter()
    work = fit_work(positions, triangles)
    check = time.perf_counter() - started
    results = multiprocessing.Queue()
    child = multiprocessing.Process(target=_fit, args=(kind, count, results))
    child.start()
    child.join(limit)
    seconds = None
    if child.is_alive():
        child.kill()
        child.join()
    else:
        seconds = round(results.get(), 2)
    return dict(mesh=kind, triangles=len(triangles), work=work, seconds=seconds, check_s=round(check, 4),
                within_default=work <= WorkBudget().max_fit_work)


def bake_row(name: str, positions, triangles, uvs, size: int) -> dict:
    albedo = lambda p: np.clip((p[:, :3] + 1.0) * 127.0, 0, 255).astype(np.uint8)  # noqa: E731
    tracemalloc.start()
    started = time.perf_counter()
    bake(positions, triangles, uvs, size, albedo)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dict(uvs=name, size=size, texels=bake_work(uvs, size), seconds=round(seconds, 1),
                peak_mb=round(peak / 2**20), within_default=bake_work(uvs, size) <= WorkBudget().max_bake_texels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hostile", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--bake-size", type=int, default=2048)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds a fit may run before it is killed")
    args = parser.parse_args()
    fits = [fit_row("sphere", 6, args.limit), fit_row("sphere", 7, args.limit),
            *(fit_row("hostile", n, args.limit) for n in args.hostile), fit_row("hostile", 20_000, 0.0)]
    base = fits[0]["seconds"] or 0.0
    rates = [(f["seconds"] - base) / f["work"] * 1e9 for f in fits if f["mesh"] == "hostile" and f["seconds"]]
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    hostile_uvs = np.tile(np.array([[0, 0], [9999, 0], [0, 9999]], np.float32), (len(box.faces), 1))
    ball = trimesh.creation.icosphere(subdivisions=5)
    bakes = [bake_row("hostile cube, 0..9999", box.vertices, box.faces, hostile_uvs, args.bake_size),
             bake_row("sphere atlas", ball.vertices, ball.faces,
                      uv_atlas(np.asarray(ball.vertices), np.asarray(ball.faces), args.bake_size), args.bake_size)]
    print(json.dumps(dict(fit=fits, ns_per_unit=[round(r) for r in rates], bake=bakes), indent=1))


if __name__ == "__main__":
    main()
