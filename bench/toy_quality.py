"""Quality of text-to-3D with the built-in toy-shapes prior: one JSON line per prompt, then a summary.

    .venv/bin/python bench/toy_quality.py [--pairs 10] [--seed 0] [--prompts "a red cube" ...] [--rescore]

For each prompt: seconds, steps, the Chamfer distance (best over yaw, centred and
scale-normalised) to every primitive, the nearest one, the hue error of the
mean vertex colour, and the density level the surface was drawn at.
`--rescore` skips training and scores the checkpoints an earlier run left in
--out with the current mesh extraction (seconds are then null).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.checkpoint import load_field, read_checkpoint_spec  # noqa: E402
from backend.extract import extract_mesh  # noqa: E402
from backend.generate import checkpoint_path_for, generate  # noqa: E402
from backend.guidance.loading import recommended_settings  # noqa: E402
from backend.toy.quality import hue_error, shape_distances, yaw_offset  # noqa: E402
from backend.toy.vocab import COLOURS, SHAPES, parse_prompt  # noqa: E402
from shared import JobSpec  # noqa: E402


def pairs(count: int) -> list[tuple[str, str]]:
    # Walk shapes fastest so any prefix covers every shape, colours shifting each round.
    every = [(SHAPES[i % len(SHAPES)], COLOURS[(i + i // len(SHAPES)) % len(COLOURS)])
             for i in range(len(SHAPES) * len(COLOURS))]
    return list(itertools.islice(every, count))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
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
    for shape, colour in chosen:
        prompt = f"a {colour} {shape}"
        spec = JobSpec.from_dict({**recommended_settings(args.model), "model": args.model, "prompt": prompt,
                                  "seed": args.seed, **json.loads(args.set)})
        out = args.out / f"{colour}_{shape}.glb"
        stopped_early = False
        if args.rescore:
            checkpoint = checkpoint_path_for(out)
            field, occupancy = load_field(checkpoint)
            extraction = extract_mesh(field, spec.mesh_resolution, occupancy)
            seconds, steps = None, read_checkpoint_spec(checkpoint)[1]
        else:
            start = time.perf_counter()
            result = generate(spec, out, device="cpu", show_progress=False)
            seconds = round(time.perf_counter() - start, 1)
            extraction, steps, stopped_early = result.extraction, result.steps, result.stopped_early
        mesh = extraction.mesh
        distances = shape_distances(mesh) if mesh.vertex_count else {}
        row = {"prompt": prompt, "seconds": seconds, "steps": steps, "iso": round(extraction.iso, 2),
               "vertices": mesh.vertex_count, "chamfer": distances,
               "nearest": min(distances, key=distances.get) if distances else None,
               "shape_right": bool(distances) and min(distances, key=distances.get) == shape,
               "hue_error_deg": hue_error(mesh, colour) if mesh.vertex_count else None,
               "cube_yaw_offset_deg": round(yaw_offset(mesh, "cube"), 1) if shape == "cube" and distances else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if stopped_early:  # generate turns Ctrl-C/SIGTERM into "stop and keep the mesh": stop the bench too
            print(json.dumps({"stopped_early": prompt, "at_step": steps}), flush=True)
            break
    timed = [r["seconds"] for r in rows if r["seconds"] is not None]
    print(json.dumps({"summary": {"prompts": len(rows), "shapes_right": sum(r["shape_right"] for r in rows),
                                  "mean_seconds": round(sum(timed) / len(timed), 1) if timed else None}}))


if __name__ == "__main__":
    main()
