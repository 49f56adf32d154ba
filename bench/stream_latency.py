"""Stream latency through the real job service: an update handed over by a worker -> decoded by a client.

    .venv/bin/python bench/stream_latency.py [--repeats 30] [--sizes 10000 100000]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
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
