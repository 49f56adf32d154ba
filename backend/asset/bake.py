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

from ..work_budget import stop_if

#: Texels (in texel widths, centre to triangle) around a chart that are baked from its nearest triangle.
MARGIN = 1.0
#: Texels whose albedo is asked for at once (their corners, weights and points: ~120 bytes each, 120 MB).
CHUNK_TEXELS = 1 << 20
#: Texels the rasteriser tests at once, and triangle rows it finds spans for at once: with the arrays a chunk
#: needs (a few hundred bytes a texel or row) this bounds the rasteriser's memory beyond its fixed rasters
#: (`rasterise`) to ~200 MB, whatever the triangles (a triangle larger than a chunk is cut at its rows).
RASTER_CHUNK = 1 << 19
ROW_CHUNK = 1 << 18
#: How far (texels) a scanline's ends are widened: the barycentric test decides, never the rounding.
_EDGE_SLACK = 1e-3

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


def rasterise(corner_uvs: np.ndarray, size: int, margin: float = MARGIN,
              should_stop: Callable[[], bool] | None = None) -> Raster:
    """Rasterise per-corner UVs ((3M) x 2, (0, 0) bottom-left) into a `size` x `size` raster. Memory: the
    rasters (face, bary, the distance transform's: ~50 bytes a texel, 0.8 GB at 4096) plus one chunk
    (RASTER_CHUNK); `should_stop` is asked between chunks (Stopped)."""
    uv = np.asarray(corner_uvs, np.float64).reshape(-1, 3, 2)
    # Texel (row r, column c) has its centre at u = (c + 0.5) / size, v = 1 - (r + 0.5) / size.
    pixel = np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], axis=-1)
    face = np.full((size, size), -1, np.int64)
    bary = np.zeros((size, size, 3), np.float32)
    _scan(pixel, size, face, bary, should_stop)
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


def _scan(pixel: np.ndarray, size: int, face: np.ndarray, bary: np.ndarray,
          should_stop: Callable[[], bool] | None = None) -> None:
    """Write every texel whose centre is inside a triangle. Scanlines, not bounding boxes: a triangle's rows
    are found first and only the span of each row that the triangle crosses is tested, so the work is the
    texels the triangles touch (`raster_work`), not their boxes (a thin diagonal sliver across the texture has
    a box of the whole texture). Rows and texels go in chunks (ROW_CHUNK, RASTER_CHUNK), in triangle order (a
    texel two triangles share ends as the later one's, as before), checking `should_stop` between chunks."""
    top = np.clip(np.ceil(pixel[..., 1].min(axis=1) - _EDGE_SLACK), 0, size)
    bottom = np.clip(np.floor(pixel[..., 1].max(axis=1) + _EDGE_SLACK), -1, size - 1)
    rows = np.maximum(bottom - top + 1, 0).astype(np.int64)
    ends = np.cumsum(rows)
    start = 0
    while start < len(pixel):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + ROW_CHUNK, side="right")), start + 1)
        tris = np.arange(start, min(stop, len(pixel)))
        start = stop
        n = rows[tris]
        if not n.sum():
            continue
        tri = np.repeat(tris, n)
        row = top[tri].astype(np.int64) + np.arange(len(tri)) - np.repeat(np.cumsum(n) - n, n)
        left, right = _row_span(pixel[tri], row.astype(np.float64), size)
        width = np.maximum(right - left + 1, 0)
        row_ends = np.cumsum(width)
        first = 0
        while first < len(tri):
            stop_if(should_stop, "the bake")
            row_base = row_ends[first - 1] if first else 0
            last = max(int(np.searchsorted(row_ends, row_base + RASTER_CHUNK, side="right")), first + 1)
            part = slice(first, min(last, len(tri)))
            first = last
            w = width[part]
            total = int(w.sum())
            if total == 0:
                continue
            t = np.repeat(tri[part], w)
            y = np.repeat(row[part], w)
            x = np.repeat(left[part], w) + np.arange(total) - np.repeat(np.cumsum(w) - w, w)
            weights, ok = _barycentrics(pixel[t], x.astype(np.float64), y.astype(np.float64))
            keep = ok & (weights.min(axis=1) >= -1e-9)
            face[y[keep], x[keep]] = t[keep]
            bary[y[keep], x[keep]] = weights[keep]


def _row_span(corners: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last column (inclusive, clipped to the texture; first > last when none) whose texel centre
    may lie in triangle `corners` (K x 3 x 2, pixel coordinates) on row `y` (K): where the row's centre line
    crosses the triangle's edges, widened by _EDGE_SLACK so the barycentric test, not rounding, decides."""
    a, b = corners, corners[:, [1, 2, 0]]
    ya, yb, xa, xb = a[..., 1], b[..., 1], a[..., 0], b[..., 0]
    yy = y[:, None]
    crosses = (np.minimum(ya, yb) - _EDGE_SLACK <= yy) & (yy <= np.maximum(ya, yb) + _EDGE_SLACK)
    flat = np.abs(yb - ya) < 1e-12
    t = np.clip((yy - ya) / np.where(flat, 1.0, yb - ya), 0.0, 1.0)
    x = xa + t * (xb - xa)
    low = np.where(flat, np.minimum(xa, xb), x)  # a level edge on the row: all of it
    high = np.where(flat, np.maximum(xa, xb), x)
    left = np.where(crosses, low, np.inf).min(axis=1)
    right = np.where(crosses, high, -np.inf).max(axis=1)
    left = np.clip(np.ceil(np.where(np.isfinite(left), left, size) - _EDGE_SLACK), 0, size)
    right = np.clip(np.floor(np.where(np.isfinite(right), right, -1) + _EDGE_SLACK), -1, size - 1)
    return left.astype(np.int64), right.astype(np.int64)


def raster_work(corner_uvs: np.ndarray, size: int) -> int:
    """An upper bound, in texels, of the work rasterising these UVs takes (what a bake budget counts): per
    triangle the texels it can touch inside the texture (its area, or its box clipped to the texture when
    that is less: a triangle spanning thousands of tiles covers one texture at most) plus a texel per row and
    column of that box (the scanlines, and the texels their ends round to). O(triangles), no raster."""
    pixel = np.asarray(corner_uvs, np.float64).reshape(-1, 3, 2) * size
    low = np.clip(pixel.min(axis=1), 0, size)
    high = np.clip(pixel.max(axis=1), 0, size)
    box = np.maximum(high - low, 0)
    e1, e2 = pixel[:, 1] - pixel[:, 0], pixel[:, 2] - pixel[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    touched = np.minimum(area, box[:, 0] * box[:, 1]) + box[:, 0] + box[:, 1] + 1
    return int(np.ceil(touched.sum()))


def bake(positions: np.ndarray, triangles: np.ndarray, corner_uvs: np.ndarray, size: int,
         albedo_at: AlbedoAt, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The albedo texture, uint8 size x size x 3 sRGB, row 0 at the top. `should_stop` is asked between chunks
    of texels (rasterising and colouring); when it says so, Stopped is raised."""
    raster = rasterise(corner_uvs, size, should_stop=should_stop)
    covered = raster.covered
    image = np.zeros((size, size, 3), np.uint8)
    if not covered.any():
        return image
    corners = np.asarray(positions, np.float64)[np.asarray(triangles, np.int64)]  # M x 3 x 3
    faces, weights = raster.face[covered], raster.bary[covered]
    colours = np.empty((len(faces), 3), np.uint8)
    for start in range(0, len(faces), CHUNK_TEXELS):  # a 4096 px bake would otherwise hold GBs of points
        stop_if(should_stop, "the bake")
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
