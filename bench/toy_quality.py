"""Quality of text-to-3D with the built-in toy-shapes prior: one JSON line per prompt, then a summary.

    .venv/bin/python bench/toy_quality.py [--pairs 10] [--seed 0] [--prompts "a red cube" ...] [--rescore]

For each prompt: seconds, steps, the Chamfer distance (best over yaw, centred and
scale-normalised) to every primitive, the nearest one, the hue error of the
mean vertex colour, the level the surface was drawn at (density; 0 for an SDF), the scores at true size and place
(backend/toy/object_score.py: nearest of every toy object, size error, drip below the true bottom),
and the crispness figures of backend/crispness.py (soft share of a 64^2 render,
silhouette IoU of mesh against volume render, roughness in degrees).
`--rescore` skips training and scores the checkpoints an earlier run left in
--out with the current mesh extraction (seconds are then null).

Report on seeds nobody tuned on: `--seed 1000 --vary-seed` gives run i seed 1000 + i.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from blender_dreamfusion.backend.checkpoint import load_field, read_checkpoint_spec
from blender_dreamfusion.backend.crispness import crispness
from blender_dreamfusion.backend.extract import extract_mesh
from blender_dreamfusion.backend.generate import checkpoint_path_for, generate
from blender_dreamfusion.shared.recommended import recommendations
from blender_dreamfusion.backend.toy.object_score import score as object_score
from blender_dreamfusion.backend.toy.quality import hue_error, shape_distances, yaw_offset
from blender_dreamfusion.backend.toy.vocab import COLOURS, SHAPES, parse_prompt
from blender_dreamfusion.shared import JobSpec

#: A run has the named colour when its mean vertex hue is within this many degrees (as the toy tests check).
HUE_RIGHT_DEG = 30.0


def pairs(count: int) -> list[tuple[str, str]]:
    # Walk shapes fastest so any prefix covers every shape, colours shifting each round.
    every = [(SHAPES[i % len(SHAPES)], COLOURS[(i + i // len(SHAPES)) % len(COLOURS)])
             for i in range(len(SHAPES) * len(COLOURS))]
    return list(itertools.islice(every, count))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vary-seed", action="store_true",
                        help="run i uses seed --seed + i (report on seeds that were not tuned on)")
    parser.add_argument("--start", type=int, default=0, help="skip the first N runs (to continue a table)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/toy_quality"))
    parser.add_argument("--model", default="toy-shapes")
    parser.add_argument("--set", default="{}", help="JSON object of JobSpec fields to override")
    parser.add_argument("--shapes", default="", help="comma-separated shapes to run (default: --pairs)")
    parser.add_argument("--prompts", nargs="+", default=None, metavar="'a COLOUR SHAPE'",
                        help="exactly these prompts instead")
    parser.add_argument("--rescore", action="store_true",
                        help="re-extract and score the checkpoints an earlier run wrote to --out, without training")
    args = parser.parse_args()
    rows = []
    chosen = pairs(args.pairs)
    if args.shapes:
        chosen = [p for p in pairs(len(SHAPES) * len(COLOURS)) if p[0] in args.shapes.split(",")][:args.pairs]
    if args.prompts:
        parsed = [parse_prompt(p) for p in args.prompts]
        if any(p.colour is None or p.shape is None for p in parsed):
            parser.error("--prompts: each prompt needs a colour and a shape, e.g. 'a red cube'")
        chosen = [(p.shape, p.colour) for p in parsed]
    for index, (shape, colour) in list(enumerate(chosen))[args.start:]:
        prompt = f"a {colour} {shape}"
        seed = args.seed + index if args.vary_seed else args.seed
        spec = JobSpec.from_dict({**recommendations(args.model), "model": args.model, "prompt": prompt,
                                  "seed": seed, **json.loads(args.set)})
        out = args.out / (f"{colour}_{shape}_s{seed}.glb" if args.vary_seed else f"{colour}_{shape}.glb")
        stopped_early = False
        checkpoint = checkpoint_path_for(out)
        if args.rescore:
            field, occupancy = load_field(checkpoint)
            extraction = extract_mesh(field, spec.mesh_resolution, occupancy)
            seconds, steps = None, read_checkpoint_spec(checkpoint)[1]
        else:
            start = time.perf_counter()
            result = generate(spec, out, device="cpu", show_progress=False)
            seconds = round(time.perf_counter() - start, 1)
            extraction, steps, stopped_early = result.extraction, result.steps, result.stopped_early
            field, occupancy = load_field(checkpoint)
        mesh = extraction.mesh
        distances = shape_distances(mesh) if mesh.vertex_count else {}
        hue = hue_error(mesh, colour) if mesh.vertex_count else None
        shape_right = bool(distances) and min(distances, key=distances.get) == shape
        true_size = object_score(mesh, shape, colour) if mesh.vertex_count else None
        row = {"prompt": prompt, "seed": seed, "geometry": field.name, "seconds": seconds, "steps": steps,
               "iso": round(extraction.iso, 2), "vertices": mesh.vertex_count, "chamfer": distances,
               "nearest": min(distances, key=distances.get) if distances else None,
               "shape_right": shape_right, "hue_error_deg": hue,
               "right": bool(shape_right and hue is not None and hue < HUE_RIGHT_DEG),
               "chamfer_named": distances.get(shape),
               "cube_yaw_offset_deg": round(yaw_offset(mesh, "cube"), 1) if shape == "cube" and distances else None,
               "nearest_at_true_size": true_size.nearest if true_size else None,
               "size_error": true_size.size_error if true_size else None,
               "drip": true_size.drip if true_size else None,
               **crispness(field, mesh, occupancy)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if stopped_early:  # generate turns Ctrl-C/SIGTERM into "stop and keep the mesh": stop the bench too
            print(json.dumps({"stopped_early": prompt, "at_step": steps}), flush=True)
            break
    print(json.dumps({"summary": summary(rows)}))


def summary(rows: list[dict]) -> dict:
    def mean(key: str):
        values = [r[key] for r in rows if r[key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {"prompts": len(rows), "shapes_right": sum(r["shape_right"] for r in rows),
            "shape_and_colour_right": sum(r["right"] for r in rows),
            "failures": [f"{r['prompt']} (seed {r['seed']}): {r['nearest']}, hue error {r['hue_error_deg']}"
                         for r in rows if not r["right"]],
            "max_size_error": max((r["size_error"] for r in rows if r["size_error"] is not None), default=None),
            "max_drip": max((r["drip"] for r in rows if r["drip"] is not None), default=None),
            **{f"mean_{k}": mean(k) for k in ("seconds", "chamfer_named", "soft_share", "silhouette_iou",
                                               "roughness_deg", "size_error", "drip")}}


if __name__ == "__main__":
    main()
