"""What durable checkpoint writes cost: `save_checkpoint` with the fsyncs of `atomic_write`, beside the same write
with fsync turned off (the behaviour before), interleaved in one run so drift hits both sides alike.

    .venv/bin/python bench/checkpoint_write.py [--repeats 10]

Uses a trainer on a tiny random SD model (written from config, no download), at the server's default field
size. Prints JSON: the checkpoint's size and the median seconds per write for each side, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from blender_dreamfusion.backend.checkpoint import save_checkpoint
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.tiny_model import write_tiny_sd
from blender_dreamfusion.backend.trainer import Trainer
from blender_dreamfusion.shared import JobSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dreamfusion-ckpt-") as tmp:
        root = Path(tmp)
        model = write_tiny_sd(root / "tiny-sd")
        spec = JobSpec(prompt="a red cube", model=str(model), steps=10, render_resolution=32, seed=1)
        trainer = Trainer(spec, load_guidance(str(model), torch.device("cpu")), "cpu")
        path = root / "job" / "checkpoint.safetensors"
        save_checkpoint(trainer, path, keep_previous=True)  # warm: folder, page cache, code paths
        real_fsync = os.fsync
        times: dict[str, list[float]] = {"durable": [], "no_fsync": []}
        for _ in range(args.repeats):
            for side in ("no_fsync", "durable"):
                os.fsync = real_fsync if side == "durable" else (lambda fd: None)
                start = time.perf_counter()
                save_checkpoint(trainer, path, keep_previous=True)
                times[side].append(time.perf_counter() - start)
        os.fsync = real_fsync
        medians = {side: statistics.median(values) for side, values in times.items()}
        print(json.dumps({
            "checkpoint_mb": round(path.stat().st_size / 2**20, 1),
            "repeats": args.repeats,
            "median_s": {side: round(value, 4) for side, value in medians.items()},
            "durable_over_no_fsync": round(medians["durable"] / medians["no_fsync"], 2),
        }, indent=2))


if __name__ == "__main__":
    main()
