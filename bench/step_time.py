"""Where an SDS step's time goes, and what extraction costs. Prints JSON.

    .venv/bin/python bench/step_time.py [--steps 30] [--resolution 64]

Uses the tiny random Stable Diffusion (`backend.tiny_model`) on the CPU, so
guidance is cheap and the field/renderer dominate, which is what this
measures. Reference point (issue 3, same machine kind): stable-dreamfusion's
pure-PyTorch path needs ~11.5 s and ~11.6 GB for one 64^2 lambertian render
forward + backward, and ~23 s to query a 256^3 density grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.cameras import make_cameras  # noqa: E402
from backend.extract import density_grid, extract_mesh  # noqa: E402
from backend.field import FieldConfig, GridField  # noqa: E402
from backend.occupancy import OccupancyGrid  # noqa: E402
from backend.guidance import load_guidance  # noqa: E402
from backend.renderer import render  # noqa: E402
from backend.tiny_model import write_tiny_sd  # noqa: E402
from backend.trainer import Trainer  # noqa: E402
from shared import JobSpec  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_sd(Path(tmp) / "tiny")
        guidance = load_guidance(str(model), torch.device("cpu"))
    spec = JobSpec(prompt="a red cube", model=str(model), seed=0, steps=args.warmup + args.steps,
                   render_resolution=args.resolution, mesh_resolution=128)
    trainer = Trainer(spec, guidance)
    rss_before = peak_rss_mb()
    phases: dict[str, list[float]] = {}
    totals, fractions = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        stats = trainer.train_step()
        elapsed = (time.perf_counter() - start) * 1000.0
        if i >= args.warmup:
            totals.append(elapsed)
            fractions.append(stats.evaluated)
            for name in ("render", "guidance", "backward", "optimiser", "occupancy"):
                phases.setdefault(name, []).append(stats.timings_ms.get(name, 0.0))

    # The reference's unit of work: one lambertian render forward + backward, no guidance.
    camera = make_cameras(0.0, 15.0, 1.8, 50.0)
    # With the trainer's own culling decision (off while the blob is soft, as it is here).
    config = dataclasses.replace(trainer.config.render, cull_hidden=trainer._cull_pays)

    def render_fwd_bwd():
        out = render(trainer.field, camera, args.resolution, shading="lambertian", occupancy=trainer.occupancy,
                     generator=torch.Generator().manual_seed(0), config=config)
        out.rgb.mean().backward()
    render_fwd_bwd()
    render_ms = statistics.median(timed(render_fwd_bwd) for _ in range(15))

    def extraction_costs(field, occupancy) -> dict:
        costs = {}
        for res in (64, 128, 256):
            query_full = timed(lambda: density_grid(field, res))
            query_skip = timed(lambda: density_grid(field, res, occupancy))
            whole = timed(lambda: extract_mesh(field, res, occupancy))
            costs[f"{res}^3"] = {"full_grid_query_ms": round(query_full, 1),
                                 "full_grid_query_with_occupancy_ms": round(query_skip, 1),
                                 "extract_mesh_total_ms": round(whole, 1)}
        return costs

    # The freshly trained field is still DreamFusion's soft blob: its "surface band" is thick.
    extraction = extraction_costs(trainer.field, trainer.occupancy)
    # A field with a crisp surface, as later in training: the narrow band is thin.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sharp = GridField(FieldConfig(blob_density=200.0))
    sharp_occupancy = OccupancyGrid(sharp.bound, 64)
    for _ in range(3):
        sharp_occupancy.update(sharp.density, torch.Generator().manual_seed(0))
    extraction_sharp = extraction_costs(sharp, sharp_occupancy)

    result = {
        "bench": "step_time",
        "device": "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": "tiny random SD (backend.tiny_model), latent guidance",
        "render_resolution": args.resolution,
        "samples_per_ray": trainer.config.render.samples_per_ray,
        "steps_measured": args.steps,
        "step_ms_median": round(statistics.median(totals), 1),
        "phase_ms_median": {k: round(statistics.median(v), 1) for k, v in phases.items()},
        "field_evaluations_with_grad_per_step": int(statistics.mean(fractions)),
        "lambertian_render_fwd_bwd_ms": round(render_ms, 1),
        "speedup_vs_reference_render_fwd_bwd": round(11500.0 / render_ms, 1),
        "extraction_soft_blob": extraction,
        "extraction_sharp_surface": extraction_sharp,
        "speedup_vs_reference_256_extraction_soft_blob": round(23000.0 / extraction["256^3"]["extract_mesh_total_ms"], 1),
        "speedup_vs_reference_256_extraction_sharp": round(23000.0 / extraction_sharp["256^3"]["extract_mesh_total_ms"],
                                                           1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "peak_rss_growth_during_training_mb": round(peak_rss_mb() - rss_before, 0),
        "occupied_fraction": round(trainer.occupancy.occupied_fraction(), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
