"""A triangle mesh's signed distance on a grid: the start shape of `init = mesh`.

Inside/outside comes from libigl's fast generalised winding number (Barill et
al. 2018), not ray parity: artist meshes are open, in several parts,
self-intersecting or wound inside out, and the winding number still says
which space they enclose (|w| > 1/2, so flipped normals count too). libigl
is the reference implementation, ships wheels for every platform, and does
the exact point-to-triangle distances on the same tree.

Exact distances are only needed near the surface, where marching cubes and
the renders look: elsewhere a Euclidean distance transform of the
inside/outside grid is within a cell of the truth, at a fraction of the cost
(a 100k-triangle mesh: about 3 s on 2 cores at 128^3 instead of minutes).

A texture-only start (`lock_geometry`) also takes open meshes: a plane, a leaf
card, a single triangle. Its shape is never extracted (every result is the
artist's own mesh, recoloured: backend/geometry/locked.py, trainer.py); the
SDF only makes the density and normals the colour field is rendered through
during training. So an open mesh there becomes a thin closed shell, its
unsigned distance less SHELL_CELLS, which renders as the sheet from both
sides and puts the colour the bake reads (at the artist's own triangles)
inside the rendered wall. Only a geometry start needs a closed mesh: its SDF
is the shape that trains.

The work is cut into pieces (`work_budget.fit_chunks`) with `should_stop`
asked between them, so a cancel reaches a long fit in seconds; what a mesh
may cost at all is decided before (`work_budget.check_work`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

#: Nodes within this many cells of the surface get exact distances.
EXACT_BAND_CELLS = 3.0
#: Half the thickness (cells) of the shell an open mesh gets when only its colours train: the trilinear
#: field is then negative all over the sheet however it lies in the grid (a diagonal sheet through a cell's
#: centre interpolates to 0.43 cells), and a wall of two cells is opaque at the final VolSDF beta.
SHELL_CELLS = 1.0


class NoVolumeError(ValueError):
    """The mesh encloses no grid node: a sheet, a line, or smaller than a cell."""


def grid_nodes(bound: float, resolution: int) -> np.ndarray:
    """resolution^3 nodes spanning [-bound, bound]^3 (corners included), indexed [x, y, z] when reshaped."""
    axis = np.linspace(-bound, bound, resolution)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def has_boundary(triangles: np.ndarray) -> bool:
    """Whether some edge belongs to one triangle only: the mesh is open somewhere (a sheet, a card, a hole)."""
    faces = np.asarray(triangles, np.int64).reshape(-1, 3)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 1).any())


def mesh_signed_distance(positions: np.ndarray, triangles: np.ndarray, bound: float, resolution: int, *,
                         open_shell: bool = False, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Signed distance (negative inside) to the mesh at `grid_nodes(bound, resolution)`, float32 [x, y, z].

    `open_shell` (a locked, texture-only shape): an open mesh, or one enclosing no grid node, is given a shell
    SHELL_CELLS thick either side of its surface (united with whatever it does enclose) instead of being
    refused. `should_stop` is asked between pieces of the work (Stopped)."""
    import igl

    from ..work_budget import fit_chunks, fit_work, stop_if

    vertices = np.ascontiguousarray(positions, np.float64)
    faces = np.ascontiguousarray(triangles, np.int64)
    nodes = grid_nodes(bound, resolution)
    # The estimate is of the framed mesh, as here: the same pieces as the budget's units.
    pieces = fit_chunks(fit_work(vertices, faces, resolution))

    def each_piece(query, compute):
        parts = []
        for part in np.array_split(np.arange(len(query)), pieces):
            stop_if(should_stop, "fitting the start mesh")
            parts.append(compute(query[part]))
        return np.concatenate(parts) if parts else np.zeros(0)

    winding = each_piece(nodes, lambda q: igl.fast_winding_number(vertices, faces, q)).reshape((resolution,) * 3)
    inside = np.abs(winding) > 0.5
    cell = 2.0 * bound / (resolution - 1)
    shell = open_shell and (not inside.any() or has_boundary(faces))
    if not inside.any() and not shell:
        raise NoVolumeError(f"the mesh encloses no volume at a {resolution}^3 grid (a sheet, or thinner than "
                            f"{cell:.3g} of the scene); give it thickness (Solidify), or texture it as it is "
                            "(lock_geometry)")
    reach = (EXACT_BAND_CELLS + 2.0) * cell

    def unsigned(query):
        return each_piece(query, lambda q: igl.signed_distance(q, vertices, faces, igl.SIGNED_DISTANCE_TYPE_UNSIGNED,
                                                               0.0, reach)[0])

    if shell:
        # Exact unsigned distance wherever the surface is within reach; beyond, the distance to the nearest
        # node within reach plus that reach (only the sign and a rough size matter out there).
        near = unsigned(nodes).reshape((resolution,) * 3)
        known = np.isfinite(near)
        far = ndimage.distance_transform_edt(~known) * cell + reach if known.any() else np.full(near.shape, reach)
        skin = np.where(known, near, far) - SHELL_CELLS * cell
        if not inside.any():
            return skin.astype(np.float32)
    # Distance to the nearest node on the other side, less half a cell: the surface lies between the two.
    outside_distance = ndimage.distance_transform_edt(~inside) * cell - 0.5 * cell
    inside_distance = ndimage.distance_transform_edt(inside) * cell - 0.5 * cell
    volume = np.where(inside, -inside_distance, outside_distance)
    band = np.abs(volume) < EXACT_BAND_CELLS * cell
    exact = near[band] if shell else unsigned(nodes[band.reshape(-1)])
    exact = np.where(np.isfinite(exact), exact, np.abs(volume[band]))
    volume[band] = np.where(inside[band], -exact, exact)
    if shell:  # what the mesh encloses, and a shell around all of it (its open parts among it)
        volume = np.minimum(volume, skin)
    return volume.astype(np.float32)
