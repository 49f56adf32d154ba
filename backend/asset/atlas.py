"""A UV atlas for a final mesh, from xatlas.

xatlas's chart search grows faster than linearly with a mesh's size (80k triangles of a sphere: ~50 s on one
core, 20k: ~4 s), so a big mesh is first cut into patches of about PATCH_FACES triangles (k-means on the
triangles' centres and normals) and each patch is charted on its own; xatlas packs them all into one atlas.
The cost is a seam along every patch border, which the bake pads across like any other.
"""

from __future__ import annotations

import math

import numpy as np

PATCH_FACES = 2000
#: Texels of empty space kept around each chart (at 1024 px): enough that the coarser mip levels a renderer
#: samples at a distance do not mix two charts. Scaled with the texture's size.
PADDING_AT_1024 = 4


def padding_for(size: int) -> int:
    return max(2, round(PADDING_AT_1024 * size / 1024))


def uv_atlas(positions: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Per-corner UVs, float32 (3M) x 2 in [0, 1], (0, 0) the image's bottom-left: one chart layout packed into
    a `size` x `size` texture with `padding_for(size)` texels between charts."""
    import xatlas

    positions = np.asarray(positions, np.float32)
    triangles = np.asarray(triangles, np.int64)
    patches = _patches(positions, triangles)
    atlas = xatlas.Atlas()
    members = []
    for label in range(patches.max() + 1):
        faces = np.flatnonzero(patches == label)
        if not len(faces):
            continue
        used, local = np.unique(triangles[faces], return_inverse=True)
        atlas.add_mesh(positions[used], local.reshape(-1, 3).astype(np.uint32))
        members.append(faces)
    pack = xatlas.PackOptions()
    pack.resolution = int(size)
    pack.padding = padding_for(size)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas made {atlas.atlas_count} atlases for one texture")
    uvs = np.zeros((len(triangles), 3, 2), np.float32)
    for index, faces in enumerate(members):
        _, indices, chart_uvs = atlas[index]
        uvs[faces] = chart_uvs[np.asarray(indices, np.int64)]
    # xatlas's v runs down the image; ours runs up it (Blender's and OBJ's convention).
    uvs[..., 1] = 1.0 - uvs[..., 1]
    _place_slivers(uvs, triangles)
    return uvs.reshape(-1, 2)


def flat_in_uv(corner_uvs: np.ndarray) -> np.ndarray:
    """Per triangle: True where its UV image has (almost) no area (a sliver xatlas shrank to a point)."""
    uv = np.asarray(corner_uvs).reshape(-1, 3, 2)
    edge1, edge2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return np.abs(edge1[:, 0] * edge2[:, 1] - edge1[:, 1] * edge2[:, 0]) <= 1e-14


def _place_slivers(uvs: np.ndarray, triangles: np.ndarray) -> None:
    """xatlas shrinks a triangle of (almost) no area to a point somewhere in its chart. Move that point to where
    one of its vertices is charted in a triangle with area, so a lookup there reads that vertex's colour (a
    sliver's vertices are all but one point). It stays a point: its corners may lie in different charts, and
    a triangle spanning them would be painted across the atlas."""
    flat = flat_in_uv(uvs)
    if not flat.any() or flat.all():
        return
    vertex_uv = np.full((int(triangles.max()) + 1, 2), np.nan, np.float32)
    charted = ~flat
    vertex_uv[triangles[charted].reshape(-1)] = uvs[charted].reshape(-1, 2)
    corners = vertex_uv[triangles[flat]]  # F x 3 x 2, NaN where a vertex is in no charted triangle
    known = ~np.isnan(corners[..., 0])
    first = np.argmax(known, axis=1)
    point = corners[np.arange(len(corners)), first]
    placed = known.any(axis=1)
    uvs[np.flatnonzero(flat)[placed]] = point[placed][:, None, :]


def _patches(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """A patch label per triangle; one patch for a mesh of at most PATCH_FACES triangles."""
    count = math.ceil(len(triangles) / PATCH_FACES)
    if count <= 1:
        return np.zeros(len(triangles), np.int64)
    from scipy.cluster.vq import kmeans2

    corners = positions[triangles].astype(np.float64)
    centres = corners.mean(axis=1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    # Normals weigh in so that a patch does not fold around a thin part (both sides in one chart).
    scale = float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) * 0.25
    features = np.concatenate([centres, normals * scale], axis=1)
    _, labels = kmeans2(features, count, minit="++", seed=0)
    return labels.astype(np.int64)
