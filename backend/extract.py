"""Mesh extraction: density grid -> marching cubes -> cleaned, coloured mesh in Blender's frame."""

from __future__ import annotations

from dataclasses import dataclass

import mcubes
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from shared import MeshData

#: Density at which the surface is drawn; below it for the whole field, no surface.
DEFAULT_ISO = 5.0
#: When the field never reaches DEFAULT_ISO but does rise above this, draw at half its peak (early previews).
MIN_PEAK = 0.5
#: Components smaller than this share of all triangles are floaters and dropped.
MIN_COMPONENT_SHARE = 0.01
CHUNK = 2**18


@dataclass
class Extraction:
    mesh: MeshData
    iso: float
    message: str  # empty when all went as expected


@torch.no_grad()
def density_grid(field, resolution: int, occupancy=None, chunk: int = CHUNK) -> np.ndarray:
    """Density at resolution^3 points spanning the bound (corners included), float32 [x, y, z].

    Points in cells the occupancy grid knows to be empty are not evaluated (density 0).
    """
    bound = field.bound
    device = next(iter(field.parameters()), torch.zeros(())).device if hasattr(field, "parameters") else "cpu"
    axis = torch.linspace(-bound, bound, resolution, device=device)
    grid = torch.zeros(resolution**3, device=device)
    for start in range(0, resolution**3, chunk):
        index = torch.arange(start, min(start + chunk, resolution**3), device=device)
        ijk = torch.stack([index // resolution**2, (index // resolution) % resolution, index % resolution], -1)
        points = axis[ijk]
        if occupancy is not None:
            keep = occupancy.query(points)
            if keep.any():
                grid[index[keep]] = field.density(points[keep]).float()
        else:
            grid[index] = field.density(points).float()
    return grid.reshape((resolution,) * 3).cpu().numpy()


def extract_mesh(field, resolution: int, occupancy=None, iso: float | None = None) -> Extraction:
    volume = density_grid(field, resolution, occupancy)
    peak = float(volume.max())
    message = ""
    if iso is None:
        iso = DEFAULT_ISO
        if peak < DEFAULT_ISO:
            if peak < MIN_PEAK:
                return Extraction(MeshData.empty(), iso, f"no surface yet: the field's highest density is "
                                                         f"{peak:.3g}, below {MIN_PEAK:g}")
            iso = 0.5 * peak
            message = f"surface drawn at density {iso:.3g} (the field has not reached {DEFAULT_ISO:g} yet)"
    if peak <= iso:
        return Extraction(MeshData.empty(), iso, f"no surface: the field never reaches density {iso:g} "
                                                 f"(its highest is {peak:.3g})")
    # Pad with empty space so surfaces touching the bound still close.
    padded = np.pad(volume, 1, mode="constant", constant_values=0.0)
    vertices, faces = mcubes.marching_cubes(padded, iso)
    if len(faces) == 0:
        return Extraction(MeshData.empty(), iso, "no surface: marching cubes found no triangles")
    vertices = (vertices - 1.0) * (2.0 * field.bound / (resolution - 1)) - field.bound
    faces = faces.astype(np.int64)  # mcubes winds counter-clockwise seen from outside when inside is high
    vertices, faces = drop_small_components(vertices, faces)
    colors = vertex_colors(field, vertices)
    return Extraction(MeshData.coerce(vertices, faces, colors), iso, message)


def drop_small_components(vertices: np.ndarray, faces: np.ndarray,
                          min_share: float = MIN_COMPONENT_SHARE) -> tuple[np.ndarray, np.ndarray]:
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label)
    keep_labels = counts >= max(1, min_share * len(faces))
    keep_labels[np.argmax(counts)] = True
    faces = faces[keep_labels[face_label]]
    used = np.unique(faces)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


@torch.no_grad()
def vertex_colors(field, vertices: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Albedo at the vertices as sRGB uint8 RGBA (the field's albedo is already in the prior's sRGB space)."""
    if len(vertices) == 0:
        return np.zeros((0, 4), np.uint8)
    device = next(iter(field.parameters()), torch.zeros(())).device if hasattr(field, "parameters") else "cpu"
    points = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    albedo = torch.cat([field(p)[1] for p in points.split(chunk)]).clamp(0, 1).cpu().numpy()
    rgb = np.round(albedo * 255.0).astype(np.uint8)
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
