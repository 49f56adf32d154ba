"""What a job's two unbounded steps may cost, estimated before they start, and how they stop part-way.

Two steps of a job take time set by what a client sent rather than by the spec's knobs, so a short, valid
submit could hold a worker for hours:

- **The fit** of a start mesh (`init = mesh`, backend/geometry/mesh_distance.py): libigl's fast winding
  number evaluates a cluster of triangles exactly, not by its far-field expansion, at every grid node within
  about twice the cluster's radius (Barnes-Hut, beta = 2), and the exact distances near the surface visit every
  triangle whose box is near the node. So the work is not the triangle count but, per triangle, the grid
  nodes within reach of it (`fit_work`). Measured on one core at 128^3 (`bench/work_budget.py`; in
  brackets, with the machine's two cores shared by other work): an 82k-triangle sphere is 1.2 M units and
  2 s (3 s), a 330k one 1.7 M and 4 s; 100 random triangles spanning the mesh are 127 M units and 8 s (14 s);
  300 are 387 M and 23 s (46 s): ~55 ns a unit (90-110) beyond the sphere's fixed cost; 20,000 are 25 G units,
  about 25 minutes. The estimate takes 0.03 s for those 20,000 and 0.2 s for the 330k sphere.
- **The bake** into a start mesh's own UVs (backend/asset/bake.py): the rasteriser's work is the texels its
  triangles touch after each is wrapped into the one tile (`bake_work`); a layout whose triangles each span
  thousands of tiles covers the whole texture once per triangle.

Both are refused at submit (service `_submit`, and `generate` before the model loads) by `check_work`, with a
reason naming the field and what to do. The limits are server settings (`ServerLimits.max_fit_work`,
`max_bake_texels`; `serve --max-fit-work`, `--max-bake-texels`; 0 turns one off) with these defaults.
Within budget, both steps still check `should_stop` between chunks and raise `Stopped`, so a cancel or a
server stop reaches them in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from blender_dreamfusion.shared import JobSpec, MeshData

#: Winding-number work allowed for one start mesh: ~17 s of libigl on one core at 128^3 beyond the fit's fixed
#: 2-4 s, 175 times what a 330k-triangle sphere needs (1.7 M); 300 triangles each spanning the mesh need 387 M.
DEFAULT_MAX_FIT_WORK = 300_000_000
#: Texels one bake into own UVs may touch: four full layers of the largest texture (4 x 4096^2), so a layout
#: that overlaps itself twice (mirrored halves) still bakes at 4096, and one that paints every face over the
#: whole texture (12 triangles spanning 0..9999: 201 M) does not.
DEFAULT_MAX_BAKE_TEXELS = 4 * 4096 * 4096
#: Fit work done between two `should_stop` checks (~1.5 s; a chunk more costs libigl a tree build, ~0.1 s
#: for 100k triangles, so a cheap mesh is fitted in one piece).
FIT_WORK_PER_CHUNK = 30_000_000

ShouldStop = Callable[[], bool]


class Stopped(Exception):
    """`should_stop` said stop inside a long step (the fit, the bake): the worker ends the job as `cancelled`,
    or `interrupted` when the server is stopping."""


class OverBudget(ValueError):
    """A start mesh or its UVs would cost more than the budget: the field at fault and the reason."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class WorkBudget:
    """The most work one job's fit and bake may take; 0 turns a limit off."""

    max_fit_work: int = DEFAULT_MAX_FIT_WORK
    max_bake_texels: int = DEFAULT_MAX_BAKE_TEXELS


def stop_if(should_stop: ShouldStop | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise Stopped(f"{what} was stopped")


def fit_work(positions: np.ndarray, triangles: np.ndarray, resolution: int | None = None) -> int:
    """Grid nodes within libigl's reach of each triangle of a start mesh, summed: per triangle a cube of side
    four times its radius (twice the radius either way: beta = 2) in grid cells, at most the whole grid. The
    mesh is framed the way `SceneMapping.framing` frames it, so the estimate is in the fit's own cells."""
    from .geometry.base import GeometryConfig
    from .mesh_start import MeshStartConfig
    from .scene_mapping import FRAMED_HALF_EXTENT

    resolution = resolution or MeshStartConfig().resolution
    triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
    if not len(triangles):
        return 0
    positions = np.asarray(positions, np.float64)
    used = positions[np.unique(triangles)]
    extent = float((used.max(axis=0) - used.min(axis=0)).max()) / 2.0
    if not np.isfinite(extent) or extent <= 0.0:
        return 0  # nothing to frame: refused elsewhere, and nothing for libigl to do
    cell = 2.0 * GeometryConfig().bound / (resolution - 1) * extent / FRAMED_HALF_EXTENT  # in world units
    total = 0.0
    for start in range(0, len(triangles), 1 << 18):  # a few MB at a time, whatever the mesh
        corners = positions[triangles[start:start + (1 << 18)]]
        radius = np.linalg.norm(corners.max(axis=1) - corners.min(axis=1), axis=1) / 2.0 / cell
        total += float(np.minimum(float(resolution) ** 3, (4.0 * radius + 1.0) ** 3).sum())
    return int(total)


def fit_chunks(work: int) -> int:
    """How many pieces the fit's grid is cut into, so that `should_stop` is asked every ~FIT_WORK_PER_CHUNK."""
    return int(min(4096, max(1, -(-work // FIT_WORK_PER_CHUNK))))


def bake_work(corner_uvs: np.ndarray, size: int) -> int:
    """Texels a bake of `size` into these per-corner UVs touches (each triangle wrapped into the one tile first,
    as the bake does)."""
    from .asset.bake import raster_work
    from .asset.final import wrap_into_tile

    return raster_work(wrap_into_tile(corner_uvs), size)


def check_work(spec: JobSpec, mesh: MeshData | None, uvs: np.ndarray | None, budget: WorkBudget,
               mesh_field: str = "init_mesh") -> None:
    """OverBudget when fitting `mesh` (the start mesh of an `init = mesh` spec) or baking into `uvs` (its own
    per-corner UVs, used with lock_geometry and a texture) would cost more than `budget`; `mesh_field` names
    where the mesh came from (init_mesh, or init_from for a file). Cheap: O(triangles), no raster, no tree."""
    if spec.init != "mesh" or mesh is None or not mesh.triangle_count:
        return
    if budget.max_fit_work:
        work = fit_work(mesh.positions, mesh.triangles)
        if work > budget.max_fit_work:
            raise OverBudget(mesh_field, (
                f"fitting this start mesh would take about {_millions(work)} units of winding-number work, over "
                f"this backend's limit of {_millions(budget.max_fit_work)} (--max-fit-work): its "
                f"{mesh.triangle_count} triangles are large for the mesh and overlap one another, so every point "
                "of the fitting grid is near many of them. Remesh it into smaller triangles that do not cross "
                "(Blender: Remesh modifier, Voxel mode), or ask the backend's operator to raise --max-fit-work"))
    size = spec.texture_size
    if (budget.max_bake_texels and spec.lock_geometry and size and uvs is not None
            and len(uvs) == 3 * mesh.triangle_count):
        texels = bake_work(uvs, size)
        if texels > budget.max_bake_texels:
            layers = texels / (size * size)
            field = "init_uvs" if layers > 2.0 else "texture_size"
            fix = ("lay the UVs out within 0..1 without overlapping (Blender: UV > Smart UV Project), or choose a "
                   "smaller texture_size" if field == "init_uvs" else "choose a smaller texture_size")
            raise OverBudget(field, (
                f"baking a {size} x {size} texture into the start mesh's own UVs would touch about "
                f"{_millions(texels)} texels ({layers:.1f} times the texture: triangles spanning many tiles or "
                f"laid over one another), over this backend's limit of {_millions(budget.max_bake_texels)} "
                f"(--max-bake-texels); {fix}, or ask the backend's operator to raise --max-bake-texels"))


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n < 1e9 else f"{n / 1e9:,.1f} G"
