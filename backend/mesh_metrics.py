"""How close one mesh is to another: surface samples, symmetric Chamfer distance, colour error.

Distances are exact point-to-triangle distances (libigl), not nearest
samples, so the measure does not depend on how densely either mesh is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blender_dreamfusion.shared import MeshData


@dataclass
class SurfaceSamples:
    points: np.ndarray     # (n, 3) float64
    colours: np.ndarray    # (n, 3) float32 sRGB in [0, 1], interpolated from the vertex colours
    normals: np.ndarray    # (n, 3) unit face normals (as wound)


def surface_samples(positions: np.ndarray, triangles: np.ndarray, colours: np.ndarray, count: int,
                    rng: np.random.Generator) -> SurfaceSamples:
    """`count` points uniform over the surface's area, with their barycentric colour and face normal."""
    v = np.asarray(positions, np.float64)
    f = np.asarray(triangles, np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        raise ValueError("the mesh has no area: every triangle is degenerate")
    face = rng.choice(len(f), size=count, p=area / area.sum())
    u, w = rng.random(count), rng.random(count)
    flip = u + w > 1.0
    u, w = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - w, w)
    bary = np.stack([1.0 - u - w, u, w], axis=1)
    corners = f[face]
    points = np.einsum("nk,nkd->nd", bary, v[corners])
    rgb = np.asarray(colours, np.float32)[:, :3] / 255.0
    sample_colours = np.einsum("nk,nkd->nd", bary.astype(np.float32), rgb[corners])
    normals = cross[face] / np.maximum(area[face], 1e-30)[:, None]
    return SurfaceSamples(points, sample_colours.astype(np.float32), normals)


def point_mesh_distance(points: np.ndarray, mesh: MeshData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance from each point to the mesh's surface, the nearest triangle and the nearest point on it."""
    import igl

    squared, face, closest = igl.point_mesh_squared_distance(np.ascontiguousarray(points, np.float64),
                                                             np.asarray(mesh.positions, np.float64),
                                                             np.asarray(mesh.triangles, np.int64))
    return np.sqrt(squared), face, closest


def chamfer(a: MeshData, b: MeshData, samples: int = 20_000, seed: int = 0) -> float:
    """Symmetric Chamfer distance between two surfaces: the mean of the two mean point-to-surface distances,
    from `samples` area-uniform points on each."""
    rng = np.random.default_rng(seed)
    on_a = surface_samples(a.positions, a.triangles, a.colors, samples, rng).points
    on_b = surface_samples(b.positions, b.triangles, b.colors, samples, rng).points
    return 0.5 * (float(point_mesh_distance(on_a, b)[0].mean()) + float(point_mesh_distance(on_b, a)[0].mean()))


def bounding_diagonal(mesh: MeshData) -> float:
    used = mesh.positions[np.unique(mesh.triangles)].astype(np.float64)
    return float(np.linalg.norm(used.max(axis=0) - used.min(axis=0)))


def colour_error(mesh: MeshData, reference: MeshData) -> float:
    """Mean absolute sRGB difference (0-255) between `mesh`'s vertex colours and `reference`'s colour at the
    nearest point of its surface."""
    _, face, closest = point_mesh_distance(mesh.positions, reference)
    corners = np.asarray(reference.triangles, np.int64)[face]
    v = np.asarray(reference.positions, np.float64)
    bary = _barycentric(closest, v[corners[:, 0]], v[corners[:, 1]], v[corners[:, 2]])
    expected = np.einsum("nk,nkd->nd", bary, reference.colors[corners, :3].astype(np.float64))
    return float(np.abs(mesh.colors[:, :3].astype(np.float64) - expected).mean())


def _barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-30, d00 * d11 - d01 * d01, 1.0)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    return np.clip(np.stack([1.0 - v - w, v, w], axis=1), 0.0, 1.0)
