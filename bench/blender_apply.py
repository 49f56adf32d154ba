"""Main-thread cost of applying one streamed mesh update in Blender (PyPI `bpy`), as the add-on does it.

    .venv/bin/python bench/blender_apply.py [--repeats 15]
    sudo .venv/bin/python bench/blender_apply.py --overlay 50   # + the viewport overlay, in the real Blender

Prints one JSON line per size (10k, 50k, 100k vertices, 2 triangles per
vertex like a marching-cubes surface): median / p90 / max milliseconds of
`scene_update.apply_mesh` on an existing job object, passed in as the job list
does (the in-place path every update after the first takes), the first update's cost (object + material
creation), and whether an update created any datablock; `full_update_ms` (that median again) beside
`colour_only_update_ms`, the median of `scene_update.apply_colors` (a locked job's update: the albedo
attribute alone). A last line times reading a start mesh (`mesh_source.world_mesh`: evaluated,
triangulated, world space) of about 100k triangles, as Generate From / Texture This Mesh do.

`--overlay N` adds one line for the viewport overlay, measured in the real
Blender 4.3 under Xvfb (the chroot of `scripts/blender-root.sh`, so root):
milliseconds to rebuild its batches after a setting change, per draw
callback, and per whole viewport redraw with it shown, hidden and with the
add-on disabled (N redraws each; software OpenGL, so absolute numbers are a
CPU's, and the ratios are what carry over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The one bench that reaches into the checkout: it measures the add-on, which the installed package does not
# hold, so it builds it with build_addon.py (and, for --overlay, runs it with the tests' real-Blender helpers).
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

import build_addon  # noqa: E402
from blender_dreamfusion.shared import MeshData  # noqa: E402


def surface_mesh(vertices: int, seed: int) -> MeshData:
    """A closed-looking surface: a UV sphere with about `vertices` vertices and 2x as many triangles."""
    rings = int(np.sqrt(vertices / 2))
    segments = vertices // rings
    theta = np.linspace(0.05, np.pi - 0.05, rings)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    jitter = 1 + 0.02 * np.random.default_rng(seed).standard_normal(t.shape)
    positions = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1) * jitter[..., None] * 0.5
    i, j = np.meshgrid(np.arange(rings - 1), np.arange(segments), indexing="ij")
    a, b = i * segments + j, i * segments + (j + 1) % segments
    c, d = a + segments, b + segments
    triangles = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    colors = np.random.default_rng(seed).integers(0, 256, (rings * segments, 4), dtype=np.uint8)
    return MeshData.coerce(positions.reshape(-1, 3), triangles, colors)


def datablocks() -> int:
    return sum(len(collection) for collection in (bpy.data.meshes, bpy.data.objects, bpy.data.materials,
                                                   bpy.data.images, bpy.data.collections))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_addon.assemble(Path(tmp) / "dreamfusion")
        sys.path.insert(0, tmp)
        from dreamfusion import mesh_source, scene_update

        scene = bpy.context.scene
        for size in (10_000, 50_000, 100_000):
            job = f"bench{size}"
            meshes = [surface_mesh(size, seed) for seed in range(args.repeats + 1)]
            start = time.perf_counter()
            obj = scene_update.apply_mesh(scene, job, f"bench {size}", meshes[0], 0, "toy-shapes")
            first_ms = (time.perf_counter() - start) * 1000
            before = datablocks()
            times = []
            for step, mesh in enumerate(meshes[1:], 1):
                start = time.perf_counter()
                scene_update.apply_mesh(scene, job, f"bench {size}", mesh, step, "toy-shapes", known=obj)
                times.append((time.perf_counter() - start) * 1000)
            colour_times = []
            for mesh in meshes[1:]:
                start = time.perf_counter()
                assert scene_update.apply_colors(obj, mesh.colors, step)
                colour_times.append((time.perf_counter() - start) * 1000)
            times.sort()
            print(json.dumps({
                "vertices": meshes[1].vertex_count, "triangles": len(meshes[1].triangles),
                "median_ms": round(statistics.median(times), 2),
                "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2), "max_ms": round(times[-1], 2),
                "first_update_ms": round(first_ms, 2), "datablocks_created_per_update": datablocks() - before,
                "full_update_ms": round(statistics.median(times), 2),
                "colour_only_update_ms": round(statistics.median(colour_times), 2),
                "bpy": bpy.app.version_string}), flush=True)
        print(json.dumps(read_bench(scene, mesh_source, scene_update, args.repeats)), flush=True)


def read_bench(scene, mesh_source, scene_update, repeats: int) -> dict:
    """Milliseconds to read a ~100k-triangle start mesh from an object with a transform and a modifier."""
    mesh = surface_mesh(50_000, 0)
    obj = scene_update.apply_mesh(scene, "bench-read", "bench read", mesh, 0, "toy-shapes")
    obj.location, obj.scale = (1.0, 2.0, 3.0), (2.0, 2.0, 2.0)
    obj.modifiers.new("weld", "WELD")  # something for the depsgraph to evaluate, cheap and shape-keeping
    times = []
    for _ in range(repeats):
        depsgraph = bpy.context.evaluated_depsgraph_get()
        start = time.perf_counter()
        read = mesh_source.world_mesh([obj], depsgraph)
        times.append((time.perf_counter() - start) * 1000)
    return {"start_mesh_triangles": read.triangle_count, "start_mesh_vertices": read.vertex_count,
            "read_start_mesh_ms": round(statistics.median(times), 2), "read_start_mesh_max_ms": round(max(times), 2)}


def overlay_bench(repeats: int) -> dict:
    import shutil

    from tests.helpers.real_blender import install_extension, make_blender_root, run_windowed

    try:
        place = install_extension(make_blender_root())
    except RuntimeError as exc:
        return {"overlay": "skipped", "reason": str(exc)[-500:]}
    result = run_windowed(place, "overlay_screenshot.py", str(place.inside / "overlay"), "--bench", str(repeats),
                          out="overlay", timeout=600)
    shutil.rmtree(place.host, ignore_errors=True)
    return {"overlay": result.get("bench"), "blender": result.get("blender"), **({"error": result["error"]}
                                                                                 if "error" in result else {})}


if __name__ == "__main__":
    if "--overlay" in sys.argv:
        print(json.dumps(overlay_bench(int(sys.argv[sys.argv.index("--overlay") + 1]))), flush=True)
    else:
        main()
