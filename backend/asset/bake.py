"""Bake an albedo field into a texture: a small rasteriser in UV space, then padding across every seam.

Each texel whose centre lies in a triangle's UV image gets the field's albedo at the matching surface point.
Texels within MARGIN texels of a triangle but outside every one (a chart's rim, which bilinear filtering
reads) get the albedo at the nearest point of that triangle. All other texels take the colour of the nearest
baked texel (an exact Euclidean distance transform), so no background is left anywhere in the image and
no mip level can blend one in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Texels (in texel widths) around a triangle that are baked from it when no triangle covers their centre.
MARGIN = 1.0
#: Candidate texels tested at once (bounding boxes of a chunk of triangles); bounds the rasteriser's memory.
CHUNK_TEXELS = 1 << 20

AlbedoAt = Callable[[np.ndarray], np.ndarray]  # (K, 3) float positions -> (K, 3 or 4) uint8 sRGB


@dataclass
class Raster:
    """Which triangle each texel samples and where: face (H, W) int64 (-1: none), bary (H, W, 3) float32,
    inside (H, W) bool (the texel's centre is in that triangle, not just near it)."""

    face: np.ndarray
    bary: np.ndarray
    inside: np.ndarray

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
    distance = np.full((size, size), np.inf, np.float32)
    _scan(pixel, size, 0.0, face, bary, distance)
    inside = face >= 0
    if margin > 0:
        _scan(pixel, size, margin, face, bary, distance)
    return Raster(face, bary, inside)


def _scan(pixel: np.ndarray, size: int, margin: float, face: np.ndarray, bary: np.ndarray,
          distance: np.ndarray) -> None:
    """Write every texel within `margin` of a triangle (inside it when 0) that is nearer to it than to
    anything written before."""
    low = np.clip(np.ceil(pixel.min(axis=1) - margin), 0, size - 1).astype(np.int64)
    high = np.clip(np.floor(pixel.max(axis=1) + margin), 0, size - 1).astype(np.int64)
    extent = np.maximum(high - low + 1, 0)
    empty_box = (pixel.max(axis=1) + margin < 0).any(axis=1) | (pixel.min(axis=1) - margin > size - 1).any(axis=1)
    counts = np.where(empty_box, 0, extent[:, 0] * extent[:, 1])
    ends = np.cumsum(counts)
    start = 0
    while start < len(pixel):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + CHUNK_TEXELS, side="right"))
        stop = max(stop, start + 1)
        _scan_chunk(pixel, size, margin, face, bary, distance, np.arange(start, min(stop, len(pixel))),
                    low, extent, counts)
        start = stop


def _scan_chunk(pixel, size, margin, face, bary, distance, tris, low, extent, counts) -> None:
    n = counts[tris]
    total = int(n.sum())
    if total == 0:
        return
    tri = np.repeat(tris, n)
    local = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    width = extent[tri, 0]
    x = low[tri, 0] + local % width
    y = low[tri, 1] + local // width
    a, b, c = pixel[tri, 0], pixel[tri, 1], pixel[tri, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.abs(area) > 1e-12
    px, py = x - a[:, 0], y - a[:, 1]
    safe = np.where(ok, area, 1.0)
    l1 = (px * (c[:, 1] - a[:, 1]) - py * (c[:, 0] - a[:, 0])) / safe
    l2 = ((b[:, 0] - a[:, 0]) * py - (b[:, 1] - a[:, 1]) * px) / safe
    weights = np.stack([1.0 - l1 - l2, l1, l2], axis=1)
    if margin == 0:
        keep = ok & (weights.min(axis=1) >= -1e-9)
        gap = np.zeros(total)
    else:
        # The nearest point of the triangle, approximately: barycentrics clamped to it.
        weights = np.clip(weights, 0.0, None)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        nearest = np.einsum("kj,kjd->kd", weights, pixel[tri])
        gap = np.hypot(nearest[:, 0] - x, nearest[:, 1] - y)
        keep = ok & (gap <= margin) & (gap < distance[y, x])
    if not keep.any():
        return
    x, y, tri, weights, gap = x[keep], y[keep], tri[keep], weights[keep], gap[keep]
    order = np.argsort(-gap, kind="stable")  # the nearest triangle is written last, so it wins a shared texel
    x, y, tri, weights, gap = x[order], y[order], tri[order], weights[order], gap[order]
    face[y, x] = tri
    bary[y, x] = weights
    distance[y, x] = gap


def bake(positions: np.ndarray, triangles: np.ndarray, corner_uvs: np.ndarray, size: int,
         albedo_at: AlbedoAt) -> np.ndarray:
    """The albedo texture, uint8 size x size x 3 sRGB, row 0 at the top."""
    raster = rasterise(corner_uvs, size)
    covered = raster.covered
    image = np.zeros((size, size, 3), np.uint8)
    if not covered.any():
        return image
    corners = np.asarray(positions, np.float64)[np.asarray(triangles, np.int64)]  # M x 3 x 3
    faces = raster.face[covered]
    points = np.einsum("kj,kjd->kd", raster.bary[covered].astype(np.float64), corners[faces])
    image[covered] = np.asarray(albedo_at(points))[:, :3]
    return fill_empty(image, covered)


def fill_empty(image: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Every texel not `filled` takes the colour of the nearest filled one."""
    if filled.all() or not filled.any():
        return image
    from scipy.ndimage import distance_transform_edt

    rows, cols = distance_transform_edt(~filled, return_distances=False, return_indices=True)
    return image[rows, cols]


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
