"""Where an SDS step's time goes, and what extraction costs, for each geometry side by side. Prints JSON.

    .venv/bin/python bench/step_time.py [--steps 30] [--resolution 64] [--model tiny|toy-shapes] [--progress 0.5]
    .venv/bin/python bench/step_time.py --model sd-sized --device cuda [--steps 30]

`--model sd-sized` (bench/sd_sized.py) times a step against a Stable-Diffusion-1.5-sized prior with random
weights: on CUDA at full size in fp16 with 64^2 renders scored at 512^2 (steps/s, the split of a step, peak
GPU memory, the projected time of 10k steps); on a CPU at reduced size, a few steps, so CI runs it. Without
a GPU, `--device cuda` exits with one line saying so.

Both geometries train in the same process, their steps interleaved, so machine
drift hits both alike; compare them as ratios. `--model tiny` (default) uses
the tiny random Stable Diffusion (`blender_dreamfusion.backend.tiny_model`), so guidance is cheap
and the geometry/renderer dominate; `--model toy-shapes` uses the built-in
prior at its recommended settings (what a toy run costs per step).
`--progress` puts the run's schedules (an SDF's wall sharpness, coarse to
fine) that far along before measuring. A third trainer, the SDF with every
sample kept in the gradient pass (`min_sample_alpha` 0), shows what skipping
the empty samples saves. Reference point (issue 3, same
machine kind): stable-dreamfusion's pure-PyTorch path needs ~11.5 s and
~11.6 GB for one 64^2 lambertian render forward + backward, and ~23 s to
query a 256^3 density grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.extract import density_grid, extract_mesh, signed_distance_grid
from blender_dreamfusion.backend.geometry import DensityConfig, DensityField
from blender_dreamfusion.backend.occupancy import OccupancyGrid
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.shared.recommended import recommendations
from blender_dreamfusion.backend.renderer import render
from blender_dreamfusion.backend.tiny_model import write_tiny_sd
from blender_dreamfusion.backend.geometry.sdf import SDFConfig
from blender_dreamfusion.backend.trainer import Trainer, TrainerConfig
from blender_dreamfusion.shared import JobSpec

#: name -> (JobSpec geometry, trainer config). The last keeps empty samples, as the renderer did before.
VARIANTS = {
    "density": ("density", TrainerConfig()),
    "sdf": ("sdf", TrainerConfig()),
    "sdf_without_sample_culling": ("sdf", TrainerConfig(geometries=(SDFConfig(min_sample_alpha=0.0),))),
}
PHASES = ("render", "guidance", "backward", "optimiser", "occupancy")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def grid_query(field, res: int, occupancy=None):
    if field.surface == "sdf":
        return signed_distance_grid(field, res)
    return density_grid(field, res, occupancy)


def extraction_costs(field, occupancy) -> dict:
    costs = {}
    for res in (64, 128, 256):
        costs[f"{res}^3"] = {"grid_query_ms": round(timed(lambda: grid_query(field, res, occupancy)), 1),
                             "extract_mesh_total_ms": round(timed(lambda: extract_mesh(field, res, occupancy)), 1)}
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--model", choices=("tiny", "toy-shapes", "sd-sized"), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--progress", type=float, default=0.0)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"step_time: --device cuda needs an NVIDIA GPU that torch {torch.__version__} can use; "
                         "this machine has none (torch.cuda.is_available() is False)")
    if args.model == "sd-sized":
        from sd_sized import run

        print(json.dumps(run(torch.device(args.device), args.steps, args.warmup), indent=2))
        return
    if args.device != "cpu":
        parser.error("--device cuda measures --model sd-sized; the geometry comparison runs on the CPU")

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            model = str(write_tiny_sd(Path(tmp) / "tiny"))
            base = {"render_resolution": args.resolution}
        else:
            model, base = "toy-shapes", recommendations("toy-shapes")
        guidance = load_guidance(model, torch.device("cpu"))
    measured = args.warmup + args.steps
    total_steps = max(measured, int(round(measured / max(1e-6, 1.0 - args.progress)))) if args.progress else measured
    trainers = {}
    for name, (geometry, config) in VARIANTS.items():
        spec = JobSpec.from_dict({**base, "prompt": "a red cube", "model": model, "seed": 0, "steps": total_steps,
                                  "mesh_resolution": 128, "geometry": geometry})
        trainers[name] = Trainer(spec, guidance, config=config)
        trainers[name].step = total_steps - measured
    rss_before = peak_rss_mb()
    totals = {k: [] for k in VARIANTS}
    evaluated = {k: [] for k in VARIANTS}
    phases = {k: {p: [] for p in PHASES} for k in VARIANTS}
    for i in range(measured):
        for variant, trainer in trainers.items():  # interleaved: drift hits every variant alike
            start = time.perf_counter()
            stats = trainer.train_step()
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= args.warmup:
                totals[variant].append(elapsed)
                evaluated[variant].append(stats.evaluated)
                for name in PHASES:
                    phases[variant][name].append(stats.timings_ms.get(name, 0.0))

    # The reference's unit of work: one lambertian render forward + backward, no guidance.
    camera = make_cameras(0.0, 15.0, 1.8, 50.0)
    per_geometry = {}
    for variant, trainer in trainers.items():
        # With the trainer's own culling decision.
        config = dataclasses.replace(trainer.config.render, cull_hidden=trainer._cull_pays)

        def render_fwd_bwd():
            out = render(trainer.field, camera, args.resolution, shading="lambertian", occupancy=trainer.occupancy,
                         generator=torch.Generator().manual_seed(0), config=config)
            out.rgb.mean().backward()
        render_fwd_bwd()
        render_ms = statistics.median(timed(render_fwd_bwd) for _ in range(15))
        # Culling changes only training; the same field's extraction is measured once.
        extraction = extraction_costs(trainer.field, trainer.occupancy) if variant in ("density", "sdf") else None
        per_geometry[variant] = {
            "step_ms_median": round(statistics.median(totals[variant]), 1),
            "phase_ms_median": {k: round(statistics.median(v), 1) for k, v in phases[variant].items()},
            "field_evaluations_with_grad_per_step": int(statistics.mean(evaluated[variant])),
            "lambertian_render_fwd_bwd_ms": round(render_ms, 1),
            "speedup_vs_reference_render_fwd_bwd": round(11500.0 / render_ms, 1),
            **({"extraction": extraction} if extraction else {}),
            "occupied_fraction": round(trainer.occupancy.occupied_fraction(), 3),
            "parameters": sum(p.numel() for p in trainer.field.parameters()),
        }
    # A density field with a crisp surface, as later in training: its narrow band is thin.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sharp = DensityField(DensityConfig(blob_density=200.0))
    sharp_occupancy = OccupancyGrid(sharp.bound, 64)
    for _ in range(3):
        sharp_occupancy.update(sharp.density, torch.Generator().manual_seed(0))
    per_geometry["density"]["extraction_sharp_surface"] = extraction_costs(sharp, sharp_occupancy)

    result = {
        "bench": "step_time",
        "device": "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": ("tiny random SD (blender_dreamfusion.backend.tiny_model), latent guidance"
                  if args.model == "tiny" else "toy-shapes"),
        "render_resolution": trainers["sdf"].spec.render_resolution,
        "samples_per_ray": trainers["sdf"].config.render.samples_per_ray,
        "steps_measured": args.steps,
        "schedule_progress": args.progress,
        "geometries": per_geometry,
        "sdf_over_density_step_time": round(per_geometry["sdf"]["step_ms_median"]
                                            / per_geometry["density"]["step_ms_median"], 3),
        "sample_culling_speedup": round(per_geometry["sdf_without_sample_culling"]["step_ms_median"]
                                        / per_geometry["sdf"]["step_ms_median"], 3),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "peak_rss_growth_during_training_mb": round(peak_rss_mb() - rss_before, 0),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
