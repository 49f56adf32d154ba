"""A toy job's step time alone and beside busy processes, for several thread settings, in one run. Prints JSON.

    .venv/bin/python bench/threads.py [--steps 20] [--busy 0 1 2] [--rounds 2]

Each measurement is a fresh process (OpenMP reads its environment once, at load) that trains the built-in
`toy-shapes` prior at its recommended settings and reports its median step. The settings compared:
- `default`: what torch does unasked (one OpenMP thread per core), as before issue 33;
- `governed`: what a job now does (`backend/threads.py`: the usable cores, given up while others keep cores
  busy, `ThreadGovernor`);
- `one_thread`: a single thread;
- `passive`: the default count with OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning).
"Busy" processes are pure-Python spin loops, one per core taken, started before and ended after each
measurement. Settings are interleaved within each round, so machine drift hits them alike; compare the
ratios (`x_alone`: the median step beside N busy processes over the same setting's alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SPIN = "while True: pass"


def child(steps: int, warmup: int) -> None:
    import torch

    from blender_dreamfusion.backend.guidance import load_guidance
    from blender_dreamfusion.backend.trainer import Trainer
    from blender_dreamfusion.shared import JobSpec
    from blender_dreamfusion.shared.recommended import recommendations

    governor = None
    if os.environ.get("BENCH_GOVERNED"):
        from blender_dreamfusion.backend.threads import ThreadGovernor, ThreadPolicy

        policy = ThreadPolicy()
        policy.apply()
        governor = ThreadGovernor(policy)
    spec = JobSpec.from_dict({**recommendations("toy-shapes"), "prompt": "a red cube", "model": "toy-shapes",
                              "seed": 0, "steps": steps + warmup})
    trainer = Trainer(spec, load_guidance("toy-shapes", torch.device("cpu")))
    times = []
    for i in range(steps + warmup):
        start = time.perf_counter()
        trainer.train_step()
        if governor is not None:
            governor.tick()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    print(json.dumps({"step_ms_median": statistics.median(times), "threads": torch.get_num_threads()}))


SETTINGS = {
    "default": {},
    "governed": {"BENCH_GOVERNED": "1"},
    "one_thread": {"OMP_NUM_THREADS": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def measure(setting: str, steps: int, warmup: int, busy: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    env.update(SETTINGS[setting])
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps), "--warmup", str(warmup)],
                             env=env, capture_output=True, text=True, check=True).stdout
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing (the governor looks every 2 s)")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=["default", "governed", "one_thread"],
                        choices=list(SETTINGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps, args.warmup)
        return
    from blender_dreamfusion.backend.threads import ThreadPolicy, usable_cores

    samples: dict[str, dict[int, list[float]]] = {s: {b: [] for b in args.busy} for s in args.settings}
    threads: dict[str, int] = {}
    for _ in range(args.rounds):
        for busy in args.busy:
            for setting in args.settings:
                got = measure(setting, args.steps, args.warmup, busy)
                samples[setting][busy].append(got["step_ms_median"])
                threads[setting] = got["threads"]
    result = {"bench": "threads", "usable_cores": usable_cores(), "policy_threads": ThreadPolicy().threads_per_job(),
              "steps_per_measurement": args.steps, "rounds": args.rounds, "settings": {}}
    for setting in args.settings:
        alone = statistics.median(samples[setting][args.busy[0]])
        result["settings"][setting] = {
            "threads": threads[setting],
            **{f"beside_{busy}_busy": {"step_ms_median": round(statistics.median(samples[setting][busy]), 1),
                                       "x_alone": round(statistics.median(samples[setting][busy]) / alone, 2),
                                       "samples_ms": [round(v, 1) for v in samples[setting][busy]]}
               for busy in args.busy}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
