"""Final-asset costs: decimation, UV atlas and bake at 1024 and 2048 px, for about 20k, 100k and 200k faces.

    .venv/bin/python bench/export.py [--sizes 1024 2048] [--faces 20000 100000 200000]

The field is a real one: the sdf geometry started from a coloured scene mesh (a sphere, a torus and a box,
as bench/refine.py), so the bake pays for real hash-grid queries. The raw mesh is its marching-cubes
extraction at 720^3 (~330k faces); each face count is decimated from it. Prints one JSON object with, per face
count: `decimation_s` (from the raw mesh), and per texture size `atlas_s`, `bake_s`, texel coverage, the
median and 95th percentile |texture - field| at the triangles' corners (0-255, slivers with no area in the
atlas left out: they render nothing; `sliver_share` says how many) and the bytes of the textured .glb, of
the .obj and of its .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine import scene_mesh  # noqa: E402

from blender_dreamfusion.backend.asset.atlas import flat_in_uv, uv_atlas  # noqa: E402
from blender_dreamfusion.backend.asset.bake import bake, rasterise, sample  # noqa: E402
from blender_dreamfusion.backend.asset.cleanup import decimate  # noqa: E402
from blender_dreamfusion.backend.export import export_result  # noqa: E402
from blender_dreamfusion.backend.extract import extract_mesh  # noqa: E402
from blender_dreamfusion.backend.trainer import Trainer  # noqa: E402
from blender_dreamfusion.shared import JobSpec, MeshData, Texture  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--faces", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    parser.add_argument("--resolution", type=int, default=720, help="marching-cubes grid of the raw mesh")
    args = parser.parse_args()

    spec = JobSpec(prompt="a thing", init="mesh", steps=10, geometry="sdf", seed=1)
    trainer = Trainer(spec, guidance=None)
    trainer.start_from_mesh(scene_mesh(5, 96))
    started = time.perf_counter()
    # Finer than a spec may ask (512) so that the largest count is a real reduction of a real extraction.
    raw = extract_mesh(trainer.field, args.resolution).mesh
    out = {"raw_faces": raw.triangle_count, "resolution": args.resolution,
           "extract_s": round(time.perf_counter() - started, 2), "runs": []}
    dense_positions = trainer.mapping.to_world(raw.positions).astype(np.float64)
    dense_triangles = raw.triangles.astype(np.int64)
    for faces in args.faces:
        started = time.perf_counter()
        positions, triangles = decimate(dense_positions, dense_triangles, faces)
        row = {"faces": int(len(triangles)), "decimation_s": round(time.perf_counter() - started, 2)}
        mesh = MeshData.coerce(positions, triangles, trainer.albedo_at(positions))
        for size in args.sizes:
            started = time.perf_counter()
            uvs = uv_atlas(positions, triangles, size)
            atlas_s = time.perf_counter() - started
            started = time.perf_counter()
            image = bake(positions, triangles, uvs, size, trainer.albedo_at)
            bake_s = time.perf_counter() - started
            corners = positions[triangles.reshape(-1)]
            error = np.abs(sample(image, uvs) - trainer.albedo_at(corners)[:, :3]).max(axis=1)
            # Slivers (no area in the atlas: xatlas shrinks them to a point) render nothing; measure the rest.
            charted = ~flat_in_uv(uvs)
            error = error.reshape(-1, 3)[charted].reshape(-1)
            texture = Texture(uvs, image)
            with tempfile.TemporaryDirectory() as folder:
                glb = export_result(mesh, Path(folder) / "a.glb", texture)[0]
                obj, png, _ = export_result(mesh, Path(folder) / "a.obj", texture)
                sizes = {"glb_bytes": glb.stat().st_size, "obj_bytes": obj.stat().st_size,
                         "png_bytes": png.stat().st_size}
            row[str(size)] = {"atlas_s": round(atlas_s, 2), "bake_s": round(bake_s, 2),
                              "coverage": round(float(rasterise(uvs, size).inside.mean()), 3),
                              "sliver_share": round(float(1 - charted.mean()), 4),
                              "median_error": round(float(np.median(error)), 2),
                              "p95_error": round(float(np.percentile(error, 95)), 2), **sizes}
            print(json.dumps({"faces": row["faces"], "size": size, **row[str(size)]}), file=sys.stderr, flush=True)
        out["runs"].append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
