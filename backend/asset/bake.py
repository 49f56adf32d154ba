"""Bake an albedo field into a texture: a small rasteriser in UV space, then padding across every seam.

Each texel whose centre lies in a triangle's UV image gets the field's albedo at the matching surface point.
Texels within MARGIN texels of a triangle but outside every one (a chart's rim, which bilinear filtering
reads) get the albedo at the nearest point of the triangle nearest them. All other texels take the colour of
the nearest baked texel (an exact Euclidean distance transform), so no background is left anywhere in the
image and no mip level can blend one in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Texels (in texel widths, centre to triangle) around a chart that are baked from its nearest triangle.
MARGIN = 1.0
#: Candidate texels tested at once (bounding boxes of a chunk of triangles); bounds the rasteriser's memory.
CHUNK_TEXELS = 1 << 21

AlbedoAt = Callable[[np.ndarray], np.ndarray]  # (K, 3) float positions -> (K, 3 or 4) uint8 sRGB


@dataclass
class Raster:
    """Which triangle each texel samples and where: face (H, W) int64 (-1: none), bary (H, W, 3) float32,
    inside (H, W) bool (the texel's centre is in that triangle, not just near it), and for every texel the
    row and column of the nearest inside texel (`nearest`, 2 x H x W; None when no texel is inside)."""

    face: np.ndarray
    bary: np.ndarray
    inside: np.ndarray
    nearest: np.ndarray | None = None

    @property
    def covered(self) -> np.ndarray:
        return self.face >= 0


def rasterise(corner_uvs: np.ndarray, size: int, margin: float = MARGIN) -> Raster:
    """Rasterise per-corner UVs ((3M) x 2, (0, 0) bottom-left) into a `size` x `size` raster."""
    uv = np.asarray(corner_uvs, np.float64).reshape(-1, 3, 2)
    # Texel (row r, column c) has its centre at u = (c + 0.5) / size, v = 1 - (r + 0.5) / size.
    pixel = np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], axis=-1)
    face = np.full((size, size), -1, np.int64)
    bary = np.zeros((size, size, 3), np.float32)
    _scan(pixel, size, face, bary)
    inside = face >= 0
    if not inside.any():
        return Raster(face, bary, inside)
    from scipy.ndimage import distance_transform_edt

    # The rim: texels just outside every triangle take the triangle of the nearest inside texel, at the point
    # of it nearest their centre (barycentrics clamped to it).
    distance, nearest = distance_transform_edt(~inside, return_indices=True)
    rows, cols = np.nonzero((distance > 0) & (distance <= margin + 0.5))
    tri = face[nearest[0, rows, cols], nearest[1, rows, cols]]
    weights = np.clip(_barycentrics(pixel[tri], cols.astype(np.float64), rows.astype(np.float64))[0], 0.0, None)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    point = np.einsum("kj,kjd->kd", weights, pixel[tri])
    near = np.hypot(point[:, 0] - cols, point[:, 1] - rows) <= margin
    face[rows[near], cols[near]] = tri[near]
    bary[rows[near], cols[near]] = weights[near]
    return Raster(face, bary, inside, nearest)


def _barycentrics(corners: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric weights (K x 3) of points (x, y) in triangles (K x 3 x 2), and which triangles have area."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    abx, aby, acx, acy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1], c[:, 0] - a[:, 0], c[:, 1] - a[:, 1]
    area = abx * acy - aby * acx
    ok = np.abs(area) > 1e-12
    px, py = x - a[:, 0], y - a[:, 1]
    safe = np.where(ok, area, 1.0)
    l1 = (px * acy - py * acx) / safe
    l2 = (abx * py - aby * px) / safe
    return np.stack([1.0 - l1 - l2, l1, l2], axis=1), ok


def _scan(pixel: np.ndarray, size: int, face: np.ndarray, bary: np.ndarray) -> None:
    """Write every texel whose centre is inside a triangle (chunks of triangles, vectorised)."""
    low = np.clip(np.ceil(pixel.min(axis=1)), 0, size - 1).astype(np.int64)
    high = np.clip(np.floor(pixel.max(axis=1)), 0, size - 1).astype(np.int64)
    extent = np.maximum(high - low + 1, 0)
    outside = (pixel.max(axis=1) < 0).any(axis=1) | (pixel.min(axis=1) > size - 1).any(axis=1)
    counts = np.where(outside, 0, extent[:, 0] * extent[:, 1])
    ends = np.cumsum(counts)
    start = 0
    while start < len(pixel):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + CHUNK_TEXELS, side="right")), start + 1)
        tris = np.arange(start, min(stop, len(pixel)))
        start = stop
        n = counts[tris]
        total = int(n.sum())
        if total == 0:
            continue
        tri = np.repeat(tris, n)
        local = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        width = extent[tri, 0]
        x = low[tri, 0] + local % width
        y = low[tri, 1] + local // width
        weights, ok = _barycentrics(pixel[tri], x.astype(np.float64), y.astype(np.float64))
        keep = ok & (weights.min(axis=1) >= -1e-9)
        face[y[keep], x[keep]] = tri[keep]
        bary[y[keep], x[keep]] = weights[keep]


def raster_cost(corner_uvs: np.ndarray, size: int) -> int:
    """Texels the rasteriser tests for these UVs: the sum of every triangle's bounding box in texels."""
    uv = np.asarray(corner_uvs, np.float64).reshape(-1, 3, 2) * size
    extent = np.clip(uv.max(axis=1) - uv.min(axis=1), 0, size) + 1
    return int((extent[:, 0] * extent[:, 1]).sum())


def bake(positions: np.ndarray, triangles: np.ndarray, corner_uvs: np.ndarray, size: int,
         albedo_at: AlbedoAt) -> np.ndarray:
    """The albedo texture, uint8 size x size x 3 sRGB, row 0 at the top."""
    raster = rasterise(corner_uvs, size)
    covered = raster.covered
    image = np.zeros((size, size, 3), np.uint8)
    if not covered.any():
        return image
    corners = np.asarray(positions, np.float64)[np.asarray(triangles, np.int64)]  # M x 3 x 3
    faces, weights = raster.face[covered], raster.bary[covered]
    colours = np.empty((len(faces), 3), np.uint8)
    for start in range(0, len(faces), CHUNK_TEXELS):  # a 4096 px bake would otherwise hold GBs of points
        part = slice(start, start + CHUNK_TEXELS)
        points = np.einsum("kj,kjd->kd", weights[part].astype(np.float64), corners[faces[part]])
        colours[part] = np.asarray(albedo_at(points))[:, :3]
    image[covered] = colours
    # Beyond the rim, the nearest inside texel's colour (the distance transform rasterise already made).
    beyond = ~covered
    image[beyond] = image[raster.nearest[0][beyond], raster.nearest[1][beyond]]
    return image


def sample(image: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear samples of `image` (H x W x C, row 0 at the top) at UVs ((K) x 2, (0, 0) bottom-left), float."""
    h, w = image.shape[:2]
    x = np.clip(np.asarray(uvs[:, 0], np.float64) * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - np.asarray(uvs[:, 1], np.float64)) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy
