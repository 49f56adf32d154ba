"""Builders shared by the tests."""

from __future__ import annotations

import numpy as np

from blender_dreamfusion.shared import MeshData, Update


def make_mesh(vertices: int, seed: int = 0) -> MeshData:
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-1, 1, size=(vertices, 3)).astype(np.float32)
    triangles = rng.integers(0, vertices, size=(2 * vertices, 3)).astype(np.int32)
    colors = rng.integers(0, 256, size=(vertices, 4)).astype(np.uint8)
    return MeshData(positions, triangles, colors)


def make_update(vertices: int, seed: int = 0, **fields) -> Update:
    base = dict(job_id="job-1", step=100, steps=1000, loss=0.25, elapsed=12.5)
    base.update(fields)
    return Update(mesh=make_mesh(vertices, seed), **base)
