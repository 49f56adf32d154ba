"""Load on a real `serve` process: many clients submitting short jobs at once, then a stream of hostile messages.

    .venv/bin/python bench/load.py [--clients 8] [--jobs 25] [--hostile 2000] [--ray-nodes 2] [--baseline-serve PATH]

Starts `dreamfusion-backend serve` on loopback with a fresh data folder and a tiny random SD model (written
from config, no download). Each client thread has its own BackendClient and submits its jobs all at once (the
queue limit per client is raised to fit them); every job is followed to its end. Prints JSON: jobs lost (accepted
but never ended, or ended twice: duplicates), the median and p99 seconds from submit to `accepted` and to the
job's first `update` and to its end, the server's RSS (and with its job processes) and the data folder's size
before, after the jobs, and after deleting them, and how many hostile messages a second the server answers (each
one answered before the next is sent). Before the load, two small jobs run alone, one after the other: the first
pays for starting the job's host (a process, the prior's load), the second shows a warm one.

With `--baseline-serve PATH` (the `dreamfusion-backend` of another install, e.g. an earlier commit's) the same
measurements run first against that server, in the same run: the JSON has "baseline" and "plain".

With `--ray-nodes N` the same load then goes, in the same run, to a `serve --ray` gateway in front of a real
Ray cluster on this machine (a head and N worker nodes, each one logical GPU), then to one started with
`--no-ray-reuse-actors` (a new actor process per job): the JSON has "plain", "gateway" and "gateway_cold".
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from blender_dreamfusion.backend.tiny_model import write_tiny_sd
from blender_dreamfusion.shared import Accepted, Cancelled, Deleted, Failed, Finished, JobSpec, Update, decode
from blender_dreamfusion.shared.client import BackendClient
from blender_dreamfusion.shared.version import PROTOCOL_TAG

SCRIPT = Path(sys.executable).with_name("dreamfusion-backend")
ENDINGS = (Finished, Failed, Cancelled)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:  # ended meanwhile
        pass
    return 0


def _tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (a server's job processes)."""
    total = _rss(pid)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(_tree_rss(int(kid)) for kid in kids)
    return total


def _spec(model: Path, seed: int) -> JobSpec:
    return JobSpec(prompt="a red cube", model=str(model), steps=6, stream_every=3, render_resolution=16,
                   mesh_resolution=16, seed=seed)


def single_job(endpoint: str, model: Path, seed: int) -> dict:
    """One small job alone: seconds from submit to `accepted`, to its first `update`, and to `finished`."""
    marks = {}
    with BackendClient(endpoint, name=f"single-{seed}") as client:
        client.ping(30)
        sent = time.perf_counter()
        request = client.submit(_spec(model, seed))
        job_id = None
        while "end" not in marks and time.perf_counter() - sent < 600:
            for event in client.poll(0.05):
                now = time.perf_counter() - sent
                if isinstance(event, Accepted) and event.request_id == request:
                    job_id, marks["accepted"] = event.job_id, now
                elif isinstance(event, Update) and event.job_id == job_id:
                    marks.setdefault("first_update", now)
                elif isinstance(event, ENDINGS) and event.job_id == job_id and event.request_id is None:
                    marks["end"], marks["ended_as"] = now, event.TYPE
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in marks.items()}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def run_client(endpoint: str, model: Path, jobs: int, seed: int, out: dict, deadline: float) -> None:
    accepted_at, first_update_at, total_at, ended = {}, {}, {}, {}
    with BackendClient(endpoint, name=f"load-{seed}") as client:
        client.ping(30)
        sent = {}
        for i in range(jobs):
            sent[client.submit(_spec(model, seed * 1000 + i))] = time.perf_counter()
        job_of: dict[str, str] = {}
        accepted_ids: list[str] = []
        while time.monotonic() < deadline and (len(accepted_ids) < len(sent) or len(ended) < len(accepted_ids)):
            for event in client.poll(0.2):
                now = time.perf_counter()
                if isinstance(event, Accepted) and event.request_id in sent:
                    accepted_ids.append(event.job_id)
                    job_of[event.job_id] = event.request_id
                    accepted_at[event.job_id] = now - sent[event.request_id]
                elif isinstance(event, Update) and event.job_id in job_of and event.job_id not in first_update_at:
                    first_update_at[event.job_id] = now - sent[job_of[event.job_id]]
                elif isinstance(event, ENDINGS) and event.request_id is None and event.job_id in job_of:
                    ended.setdefault(event.job_id, []).append(event.TYPE)
                    total_at.setdefault(event.job_id, now - sent[job_of[event.job_id]])
                elif event.TYPE in ("rejected", "error"):
                    out.setdefault("refusals", []).append(getattr(event, "reason", "")[:200])
    out["submitted"] = len(sent)
    out["accepted"] = accepted_ids
    out["accepted_s"] = list(accepted_at.values())
    out["first_update_s"] = list(first_update_at.values())
    out["total_s"] = list(total_at.values())
    out["ended"] = ended


def hostile_rate(endpoint: str, count: int) -> dict:
    """Answers per second to messages that are each wrong in another way (the issue's crashers among them)."""
    big = 9223372036854775808
    headers = [
        {"type": "submit", "spec": {"prompt": "x", "preset": []}},
        {"type": "submit", "spec": {"prompt": "x", "k" * 201: 1}},
        {"type": "submit", "spec": {"prompt": "x", "\ud800": 1}},
        {"type": "submit", "spec": {"prompt": "x"},
         "buffers": [{"name": "init_positions", "dtype": "float32", "shape": [0, big]}]},
        {"type": "cancel", "job_id": "nope"},
        {"type": "update", "job_id": "x"},
        {"type": "status", "job_id": ["x"]},
        {"type": "list", "offset": -1},
    ]
    messages = [[PROTOCOL_TAG, json.dumps(h).encode(), *([b""] if "buffers" in h else [])] for h in headers]
    messages.append([PROTOCOL_TAG, b"[" * 2000 + b"]" * 2000])
    messages.append([b"HTTP/1.1", b"GET /"])
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    codes: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(count):
        socket.send_multipart(messages[i % len(messages)])
        if not socket.poll(10_000):
            raise SystemExit(f"no answer to hostile message {i}")
        reply = decode(socket.recv_multipart())
        key = getattr(reply, "code", reply.TYPE)
        codes[key] = codes.get(key, 0) + 1
    seconds = time.perf_counter() - start
    socket.close(0)
    return {"messages": count, "per_second": round(count / seconds), "answers": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=25, help="jobs per client")
    parser.add_argument("--hostile", type=int, default=2000, help="hostile messages to send")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on unfinished jobs after this")
    parser.add_argument("--baseline-serve", type=Path, default=None, metavar="PATH",
                        help="also measure the `dreamfusion-backend` at PATH (another install), first, in the same run")
    parser.add_argument("--ray-nodes", type=int, default=0, metavar="N",
                        help="also load a `serve --ray` gateway on a real Ray cluster on this machine (a head and N "
                             "worker nodes with one logical GPU each), after the plain server, in the same run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dreamfusion-load-") as tmp:
        root = Path(tmp)
        model = write_tiny_sd(root / "tiny-sd")
        report = {}
        if args.baseline_serve:
            report["baseline"] = measure(args, root, model, root / "baseline", script=args.baseline_serve)
        report["plain"] = measure(args, root, model, root / "plain")
        if args.ray_nodes:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                                   "include_dashboard": False})
            for _ in range(args.ray_nodes):
                cluster.add_node(num_cpus=1, num_gpus=1)
            cluster.wait_for_nodes()
            try:
                report["gateway"] = measure(args, root, model, root / "gateway", "--ray", cluster.address)
                report["gateway"]["ray_nodes"] = args.ray_nodes
                # The same gateway starting a process per job: what handing warm actors on saves.
                report["gateway_cold"] = measure(args, root, model, root / "gateway-cold", "--ray", cluster.address,
                                                 "--no-ray-reuse-actors")
            finally:
                cluster.shutdown()
        print(json.dumps(report if len(report) > 1 else report["plain"], indent=2))


def measure(args, root: Path, model: Path, data: Path, *extra: str, script: Path = SCRIPT) -> dict:
    """Start `serve` (with `extra` flags), load it, and describe what happened."""
    server = subprocess.Popen([str(script), "serve", "--bind", "tcp://127.0.0.1:0", "--data-dir", str(data),
                               "--device", "cpu", "--allow-path", str(root), "--max-queued-per-client",
                               str(args.jobs + 1), "--max-jobs", str(args.clients * args.jobs + 10), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        endpoint = re.search(r"listening on (tcp://\S+)", server.stdout.readline())[1]
        singles = [single_job(endpoint, model, seed) for seed in (1, 2)]
        rss_before, tree_before, disk_before = _rss(server.pid), _tree_rss(server.pid), _size(data)
        results = [{} for _ in range(args.clients)]
        deadline = time.monotonic() + args.timeout
        threads = [threading.Thread(target=run_client, args=(endpoint, model, args.jobs, c + 1, results[c],
                                                              deadline)) for c in range(args.clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        rss_after, tree_after, disk_after = _rss(server.pid), _tree_rss(server.pid), _size(data)
        accepted = [job for r in results for job in r.get("accepted", [])]
        ended = {job: kinds for r in results for job, kinds in r.get("ended", {}).items()}
        hostile = hostile_rate(endpoint, args.hostile)
        rss_hostile, tree_hostile = _rss(server.pid), _tree_rss(server.pid)
        with BackendClient(endpoint) as client:
            freed = 0
            for job in accepted:
                reply = client.request(client.delete(job), 60)
                freed += reply.freed_bytes if isinstance(reply, Deleted) else 0
        disk_deleted, tree_deleted = _size(data), _tree_rss(server.pid)
        accepted_s = [s for r in results for s in r.get("accepted_s", [])]
        update_s = [s for r in results for s in r.get("first_update_s", [])]
        total_s = [s for r in results for s in r.get("total_s", [])]
        return {
            "single_job_s": {"first": singles[0], "second": singles[1]},
            "clients": args.clients, "jobs_per_client": args.jobs,
            "submitted": sum(r.get("submitted", 0) for r in results), "accepted": len(accepted),
            "jobs_lost": sum(1 for job in accepted if job not in ended),
            "duplicates": len(accepted) - len(set(accepted)) + sum(len(k) - 1 for k in ended.values()),
            "finished": sum(1 for k in ended.values() if k == ["finished"]),
            "refusals": [x for r in results for x in r.get("refusals", [])][:5],
            "seconds": round(seconds, 1),
            "submit_to_accepted_s": {"median": _round(statistics.median(accepted_s) if accepted_s else None),
                                     "p99": _round(_percentile(accepted_s, 0.99))},
            "submit_to_first_update_s": {"median": _round(statistics.median(update_s) if update_s else None),
                                         "p99": _round(_percentile(update_s, 0.99))},
            "submit_to_end_s": {"median": _round(statistics.median(total_s) if total_s else None),
                                "p99": _round(_percentile(total_s, 0.99))},
            "server_rss_mb": {"before": _mb(rss_before), "after_jobs": _mb(rss_after),
                              "after_hostile": _mb(rss_hostile)},
            "server_and_job_processes_rss_mb": {"before": _mb(tree_before), "after_jobs": _mb(tree_after),
                                                "after_hostile": _mb(tree_hostile),
                                                "after_delete": _mb(tree_deleted)},
            "data_dir_mb": {"before": _mb(disk_before), "after_jobs": _mb(disk_after),
                            "after_delete": _mb(disk_deleted), "freed_by_delete": _mb(freed)},
            "hostile": hostile,
            "server_alive": server.poll() is None,
        }
    finally:
        server.terminate()
        server.wait(120)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


if __name__ == "__main__":
    main()
