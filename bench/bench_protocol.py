"""Protocol speed: encode/decode and a tcp loopback round trip of a streamed mesh. Prints JSON.

    .venv/bin/python bench/bench_protocol.py [--vertices 100000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import zmq

from blender_dreamfusion.shared import SERVER_TYPES, MeshData, Update, decode, encode
from blender_dreamfusion.shared.transport import recv, send


def make_update(vertices: int) -> Update:
    rng = np.random.default_rng(0)
    mesh = MeshData(rng.uniform(-1, 1, (vertices, 3)).astype(np.float32),
                    rng.integers(0, vertices, (2 * vertices, 3)).astype(np.int32),
                    rng.integers(0, 256, (vertices, 4)).astype(np.uint8))
    return Update(job_id="bench", step=1, steps=2, loss=0.1, elapsed=1.0, mesh=mesh)


def timed(fn, repeats: int) -> dict:
    fn()  # warm up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(samples), 3), "min_ms": round(min(samples), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vertices", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    update = make_update(args.vertices)
    frames = [bytes(f) for f in encode(update)]
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b.connect(f"tcp://127.0.0.1:{port}")

    def round_trip():
        send(a, update)
        recv(b, accept=SERVER_TYPES)

    result = {
        "bench": "protocol",
        "vertices": args.vertices,
        "triangles": 2 * args.vertices,
        "message_bytes": sum(len(f) for f in frames),
        "encode": timed(lambda: encode(update), args.repeats),
        "decode_with_validation": timed(lambda: decode(frames), args.repeats),
        "tcp_loopback_send_recv_decode": timed(round_trip, args.repeats),
    }
    ctx.destroy(linger=0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
