"""Stream latency through the real job service: an update handed over by a worker -> decoded by a client; and
(`--first-mesh`) how long an artist waits for a default toy job's first mesh through `serve`.

    .venv/bin/python bench/stream_latency.py [--repeats 30] [--sizes 10000 100000]
    .venv/bin/python bench/stream_latency.py --first-mesh [--repeats 1] [--steps 600]

`--first-mesh` starts `dreamfusion-backend serve` (a subprocess, as the add-on's local backend), submits the
built-in prior's default job ("a blue torus") the moment the server listens ("cold": the job process starts and
the prior loads inside the wait), then a second one on the same server ("warm": process and prior ready), and
times submit -> first `update` and submit -> `finished` for each. Run it with another checkout's package first
on PYTHONPATH to compare versions in one sitting.

Runs `Server` on tcp://127.0.0.1 (ephemeral port) and a `BackendClient`
watching one job. Each round, a bench thread emits an update exactly as a
worker does; the client polls, decodes (and acks). Prints JSON with the
milliseconds per mesh size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from blender_dreamfusion.backend.server.service import Server, ServerConfig
from blender_dreamfusion.shared import JobSpec, MeshData, Update
from blender_dreamfusion.shared.client import BackendClient


def make_mesh(vertices: int) -> MeshData:
    rng = np.random.default_rng(0)
    return MeshData(rng.uniform(-1, 1, (vertices, 3)).astype(np.float32),
                    rng.integers(0, vertices, (2 * vertices, 3)).astype(np.int32),
                    rng.integers(0, 256, (vertices, 4)).astype(np.uint8))


def measure(server: Server, client: BackendClient, job_id: str, vertices: int, repeats: int) -> dict:
    mesh = make_mesh(vertices)
    times = []
    for step in range(1, repeats + 1):
        update = Update(job_id=job_id, step=step, steps=repeats, loss=0.1, elapsed=1.0, mesh=mesh)
        produced = time.perf_counter()
        threading.Thread(target=server._emit, args=(update,)).start()  # from a thread, as a worker does
        deadline = produced + 10.0
        got = None
        while got is None and time.perf_counter() < deadline:
            got = next((e for e in client.poll(0.5) if isinstance(e, Update) and e.step == step), None)
        if got is None:
            raise SystemExit(f"update {step} never arrived")
        times.append((time.perf_counter() - produced) * 1000.0)
    times.sort()
    return {"vertices": vertices, "triangles": 2 * vertices, "bytes": int(mesh.positions.nbytes + mesh.triangles.nbytes + mesh.colors.nbytes),
            "median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "min_ms": round(times[0], 2)}


def first_mesh(endpoint: str, seed: int, steps: int | None) -> dict:
    """Submit the toy prior's default job; seconds to its first update and to its end."""
    from blender_dreamfusion.shared import Failed, Finished, Progress
    from blender_dreamfusion.shared.recommended import recommendations

    spec = JobSpec.from_dict({**recommendations("toy-shapes"), "prompt": "a blue torus", "model": "toy-shapes",
                              "seed": seed, **({"steps": steps} if steps else {})})
    with BackendClient(endpoint) as client:
        start = time.perf_counter()
        job_id = client.request(client.submit(spec), timeout=60).job_id
        first = first_step = None
        rates = []
        while time.perf_counter() - start < 3600:
            for event in client.poll(0.2):
                if getattr(event, "job_id", None) != job_id:
                    continue
                if isinstance(event, Update) and first is None:
                    first, first_step = time.perf_counter() - start, event.step
                elif isinstance(event, Progress) and event.it_per_s:
                    rates.append(event.it_per_s)
                elif isinstance(event, Failed):
                    raise SystemExit(f"the job failed: {event.reason}")
                elif isinstance(event, Finished):
                    return {"first_update_s": round(first, 1) if first is not None else None,
                            "first_update_step": first_step, "finished_s": round(time.perf_counter() - start, 1),
                            "steps": event.step, "median_it_per_s": round(statistics.median(rates), 2)}
    raise SystemExit("the job did not finish within an hour")


def first_mesh_runs(repeats: int, steps: int | None) -> dict:
    import subprocess
    import sys

    runs = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as data:
            serve = subprocess.Popen([sys.executable, "-m", "blender_dreamfusion.backend.cli", "serve", "--bind",
                                      "tcp://127.0.0.1:0", "--device", "cpu", "--data-dir", data],
                                     stdout=subprocess.PIPE, text=True)
            try:
                endpoint = serve.stdout.readline().split("listening on ")[1].split()[0]
                runs.append({"cold": first_mesh(endpoint, repeat, steps), "warm": first_mesh(endpoint, 100 + repeat,
                                                                                             steps)})
            finally:
                serve.terminate()
                serve.wait(60)
    from blender_dreamfusion.backend import trainer

    return {"bench": "first_mesh", "package": str(Path(trainer.__file__).parents[1]), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--first-mesh", action="store_true", help="time a default toy job's first mesh via serve")
    parser.add_argument("--steps", type=int, default=None, help="--first-mesh: steps per job (default: the toy's)")
    args = parser.parse_args()
    if args.first_mesh:
        print(json.dumps(first_mesh_runs(args.repeats or 1, args.steps), indent=2))
        return
    args.repeats = args.repeats or 30
    with tempfile.TemporaryDirectory() as data:
        server = Server(ServerConfig(bind="tcp://127.0.0.1:0", data_dir=Path(data), device="cpu"))
        loop = threading.Thread(target=server.serve_forever, daemon=True)
        loop.start()
        # A job that is never queued for a worker: only the bench produces its updates.
        job_id = server.store.create(JobSpec(prompt="a red cube", seed=0)).job_id
        server.store.update(job_id, state="running")
        with BackendClient(server.endpoint) as client:
            client.request(client.watch(job_id))
            results = [measure(server, client, job_id, n, args.repeats) for n in args.sizes]
        server.stop()
        loop.join()
    print(json.dumps({"bench": "stream_latency", "transport": "tcp://127.0.0.1", "repeats": args.repeats,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
