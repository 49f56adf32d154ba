"""Best of N on a built-in toy prior: how often one candidate is right, how often best of 3 and best of 5 are, and
how well the judge chooses. One JSON line per candidate run, then (`--summary`) the table.

    OMP_NUM_THREADS=1 .venv/bin/python bench/best_of.py --pairs 30 --seed 9100 --candidates 5 --out DIR [--worker 0/2]
    .venv/bin/python bench/best_of.py --summary --out DIR
    .venv/bin/python bench/best_of.py --timing [--prompt "a red cube"]   # best of 3 against one run, same machine

A job's candidates train independently (each from its own seed; tests/test_best_of.py holds a chosen candidate's
mesh equal to a single job's of its seed), so each candidate here is trained alone: to the job's choice step,
where the judge scores it (with the job's seed, as the job would), then on to the end, where
backend/toy/object_score.py says whether it is right (object and colour). Best of k for a pair takes its first k
candidates and the judge's highest score among them. Runs go pair by pair for candidates 0-2, then 3-4, so a
table cut short still has best of 3; `--worker i/n` runs every n-th run (several processes on one machine) and
runs already in DIR/runs.jsonl are skipped (a bench stopped midway goes on). Each candidate's final mesh is
written to DIR as PROMPT_sJOBSEED_cINDEX.glb, to look at them side by side.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from pathlib import Path

import torch

from blender_dreamfusion.backend.candidates import candidate_seeds, judge_candidate
from blender_dreamfusion.backend.export import export_mesh
from blender_dreamfusion.backend.generate import generate
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.job_run import end_run, start_trainer
from blender_dreamfusion.backend.toy.object_score import score as object_score
from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.recommended import recommendations

from toy_quality import HUE_RIGHT_DEG, pairs  # noqa: E402 - bench/ is the script's folder


def spec_for(model: str, prompt: str, seed: int, **fields) -> JobSpec:
    return JobSpec.from_dict({**recommendations(model), "model": model, "prompt": prompt, "seed": seed, **fields})


def runs(count: int, candidates: int) -> list[tuple[int, int]]:
    """(pair, candidate) in the order they are trained: candidates 0-2 of every pair, then the rest."""
    early = [(p, c) for p in range(count) for c in range(min(3, candidates))]
    return early + [(p, c) for p in range(count) for c in range(3, candidates)]


def train_one(model: str, guidance, asked, job_seed: int, index: int, out: Path | None = None) -> dict:
    seed = candidate_seeds(job_seed, index + 1)[index]
    job = spec_for(model, asked.text(), job_seed)
    spec = job.replace(seed=seed)
    start = time.perf_counter()
    trainer = start_trainer(spec, torch.device("cpu"), load=lambda *_: guidance)
    while trainer.step < job.select_step():
        trainer.train_step()
    judged = judge_candidate(trainer, job_seed)
    judge_seconds = time.perf_counter() - start
    trainer.run()
    mesh = end_run(trainer, finish=True, preview=False).mesh
    scored = object_score(mesh, asked.object, asked.colour) if mesh.vertex_count else None
    if out is not None and mesh.vertex_count:  # to look at the candidates side by side
        export_mesh(mesh, out / f"{asked.text().replace(' ', '_')}_s{job_seed}_c{index}.glb")
    return {"prompt": asked.text(), "job_seed": job_seed, "candidate": index, "seed": seed,
            "score": round(judged.score, 5), "coverage": round(judged.coverage, 4), "sane": judged.sane,
            "right": bool(scored and scored.right(asked.object, asked.colour, asked.pattern, HUE_RIGHT_DEG)),
            "nearest": scored.nearest if scored else None,
            "colour_error_deg": scored.colour_error if scored else None,
            "size_error": scored.size_error if scored else None,
            "seconds": round(time.perf_counter() - start, 1), "seconds_to_judgement": round(judge_seconds, 1)}


def summarise(rows: list[dict]) -> dict:
    by_pair: dict[tuple[str, int], dict[int, dict]] = {}
    for row in rows:
        by_pair.setdefault((row["prompt"], row["job_seed"]), {})[row["candidate"]] = row
    out: dict = {"candidate_runs": len(rows), "single_right": f"{sum(r['right'] for r in rows)} of {len(rows)}"}
    for k in (3, 5):
        complete = [c for c in by_pair.values() if all(i in c for i in range(k))]
        if not complete:
            continue
        chosen = [max((c[i] for i in range(k)), key=lambda r: (r["sane"], r["score"])) for c in complete]
        any_right = [any(c[i]["right"] for i in range(k)) for c in complete]
        judged = [ch["right"] for ch, ok in zip(chosen, any_right) if ok]
        out[f"best_of_{k}"] = {
            "pairs": len(complete), "right": f"{sum(ch['right'] for ch in chosen)} of {len(complete)}",
            "first_candidate_right": f"{sum(c[0]['right'] for c in complete)} of {len(complete)}",
            "some_candidate_right": f"{sum(any_right)} of {len(complete)}",
            "judge_accuracy": f"{sum(judged)} of {len(judged)}",
            # The pairs the judge could get wrong: some candidates right, some not.
            "mixed_pairs": f"{sum(ch['right'] for ch, c in zip(chosen, complete) if _mixed(c, k))} right of "
                           f"{sum(_mixed(c, k) for c in complete)}",
            "failures": [f"{ch['prompt']} (job seed {ch['job_seed']}): chose {ch['candidate']} -> {ch['nearest']}, "
                         f"colour error {ch['colour_error_deg']}" for ch in chosen if not ch["right"]]}
    return out


def _mixed(candidates: dict[int, dict], k: int) -> bool:
    return len({candidates[i]["right"] for i in range(k)}) == 2


def timing(prompt: str, model: str, seed: int) -> dict:
    """Seconds of a whole best-of-3 job and of a single job of the same spec, one after the other."""
    out = {}
    for candidates in (1, 3, 1):
        spec = spec_for(model, prompt, seed, candidates=candidates)
        start = time.perf_counter()
        generate(spec, Path(f"/tmp/best_of_timing_{candidates}.glb"), device="cpu", show_progress=False)
        out.setdefault(f"seconds_candidates_{candidates}", []).append(round(time.perf_counter() - start, 1))
    single = sum(out["seconds_candidates_1"]) / 2
    return {**out, "ratio_best_of_3_to_single": round(out["seconds_candidates_3"][0] / single, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="toy-shapes")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=9100, help="pair i's job seed is --seed + i")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/best_of"))
    parser.add_argument("--worker", default="0/1", help="i/n: run every n-th run, starting at i")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--prompt", default="a red cube")
    args = parser.parse_args()
    if args.timing:
        print(json.dumps(timing(args.prompt, args.model, args.seed)))
        return
    table = args.out / "runs.jsonl"
    done = [json.loads(line) for line in table.read_text().splitlines()] if table.is_file() else []
    if args.summary:
        print(json.dumps(summarise(done), indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    worker, workers = (int(x) for x in args.worker.split("/"))
    asked = pairs(args.pairs, args.model)
    seen = {(r["prompt"], r["job_seed"], r["candidate"]) for r in done}
    guidance = load_guidance(args.model, torch.device("cpu"))
    for n, (pair, index) in enumerate(runs(args.pairs, args.candidates)):
        if n % workers != worker or (asked[pair].text(), args.seed + pair, index) in seen:
            continue
        row = train_one(args.model, guidance, asked[pair], args.seed + pair, index, args.out)
        with table.open("a") as f:  # several workers append to one table
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
