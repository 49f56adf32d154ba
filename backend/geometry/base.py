"""What every geometry gives the renderer, trainer, extraction and checkpoints.

A geometry is a module over world points in [-bound, bound]^3 (Blender's
frame) answering density (what volume rendering integrates), albedo (sRGB in
[0, 1], as the image prior sees colour) and outward normals. Geometries differ in
how they hold the shape: `density` (DensityField) learns the density itself,
`sdf` (SDFField) learns a signed distance and derives density from it, so its
surface is the zero level set. A new geometry is a new file in this package:
a `GeometryConfig` subclass naming it and a `Geometry` subclass decorated
with `registry.register_geometry` (see registry.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class GeometryConfig:
    """What every geometry config holds and does: it names the geometry it builds (`geometry`, the
    registry key, the JobSpec `geometry` value and the type tag a checkpoint stores beside the config's
    JSON) and builds it (`build`)."""

    geometry: ClassVar[str]
    #: Half the side of the cube the geometry lives in (metres).
    bound: float = 1.0
    #: Nodes per axis of the start shape's signed-distance grid (`init = mesh`); 0: the geometry's own start
    #: (the SDF's sphere, the density field's blob).
    start_resolution: int = 0
    #: Nodes per axis of the start colours' grid (sRGB logits the learnt colour adds to); 0: none.
    start_colour_resolution: int = 0

    def for_render(self, render_resolution: int) -> "GeometryConfig":
        """This config with what it leaves to the renders filled in (the SDF's grid levels); as is by default."""
        return self

    def build(self) -> "Geometry":
        from .registry import geometry_class

        return geometry_class(self.geometry)(self)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GeometryConfig":
        """A config from a checkpoint's JSON; fields a newer version added take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in json.loads(text).items() if k in known}
        return cls(**values)


class Geometry(nn.Module):
    """A shape and its colour over world points, trained by the SDS trainer (see the module docstring)."""

    #: The registry name, set by `register_geometry` from `config_class.geometry`.
    name: ClassVar[str]
    #: The config dataclass this class is built from.
    config_class: ClassVar[type[GeometryConfig]]
    #: What its values are: "density" (>= 0, the surface an iso-level of it) or "sdf" (a signed distance, the
    #: surface its zero level set). Benches read it; extraction does not (each geometry extracts itself).
    surface: ClassVar[Literal["density", "sdf"]] = "density"

    config: GeometryConfig

    @property
    def bound(self) -> float:
        return self.config.bound

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) points -> density (N,) >= 0 and albedo (N, 3) in [0, 1]."""
        raise NotImplementedError

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward(points)[0]

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) sRGB albedo in [0, 1] at points (what vertex colours and bakes read)."""
        return self.forward(points)[1]

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) unit outward normals, differentiable."""
        raise NotImplementedError

    def grid_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the full learning rate (feature grids)."""
        raise NotImplementedError

    def network_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the trainer's reduced network rate (MLPs)."""
        raise NotImplementedError

    def set_progress(self, step: int, steps: int) -> None:
        """Called before every training step, for schedules that follow the run (none by default)."""

    def losses(self, surface_points: torch.Tensor, generator: torch.Generator,
               weights: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """The losses this geometry itself needs (the SDF's `eikonal`), by name and already weighted, looking near
        the render's (M, 3) surface points. `weights`: the job's weights (`loss_weights`); a loss at weight 0 is
        left out. The trainer adds them to its own without knowing their names."""
        return {}

    @staticmethod
    def loss_weights(spec) -> dict[str, float]:
        """The weights of `losses`, read from a JobSpec: its own options are `spec.geometry_options`, this
        geometry's dataclass in shared/geometry_options.py (none by default)."""
        return {}

    # --- what the trainer and the artist see -----------------------------------------------------------

    def update_occupancy(self, occupancy, generator: torch.Generator) -> None:
        """Refresh the trainer's occupancy grid (`occupancy.OccupancyGrid`, where `render` skips empty space) from
        this geometry's density; a geometry that renders without it leaves it be."""
        occupancy.update(self.density, generator)

    def render(self, cameras, resolution: int, **options):
        """`cameras`' images of this geometry (`renderer.Render`; `options` as `renderer.render` takes them). A
        field is volume-rendered through its density and albedo; a geometry that is not a field renders itself."""
        from ..renderer import render

        return render(self, cameras, resolution, **options)

    def extract(self, resolution: int, occupancy=None, iso: float | None = None):
        """Its surface as a coloured mesh (`extract.Extraction`): a density field's at a density level, chosen
        from what its renders show when `iso` is None (`extract.density_surface`)."""
        from ..extract import density_surface

        return density_surface(self, resolution, occupancy, iso)

    # --- starting from a mesh (init = mesh) ---------------------------------------------------------

    def set_start_shape(self, signed_distance: torch.Tensor) -> None:
        """Start from this shape: a (R, R, R) signed distance (negative inside) at `start_resolution` nodes per
        axis spanning the bound, indexed [x, y, z]. The geometry's config must have that start_resolution."""
        start = getattr(self, "start_sdf", None)
        if start is None:
            raise ValueError(f"the {self.name} geometry was built without a start shape (start_resolution 0)")
        start.copy_(xyz_to_grid(signed_distance).to(start))

    def set_start_colour(self, logits: torch.Tensor) -> None:
        """Start from these colours: (R, R, R, 3) sRGB logits at `start_colour_resolution` nodes per axis spanning
        the bound, indexed [x, y, z]; the learnt colour adds to them (its last layer starts at zero)."""
        start = getattr(self, "start_colour", None)
        if start is None:
            raise ValueError(f"the {self.name} geometry was built without start colours (start_colour_resolution 0)")
        with torch.no_grad():
            start.copy_(xyz_to_grid(logits).to(start))


def sample_grids(grids: nn.ParameterList, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear features of (N, 3) world points from dense (1, C, R, R, R) grids, concatenated: (N, sum C)."""
    coords = (points / bound).clamp(-1.0, 1.0).reshape(1, 1, 1, -1, 3)
    feats = [F.grid_sample(g, coords, mode="bilinear", align_corners=True).reshape(g.shape[1], -1) for g in grids]
    # (N, C) contiguous: the MLP's matmuls are ~25% faster than on the transposed view.
    return torch.cat(feats, dim=0).t().contiguous()


#: With start colours, the colour MLP's last layer starts this much smaller (its bias at zero): the learnt colour
#: adds a few hundredths of a logit at first, so the start colours hold, yet gradients still reach the grids.
START_COLOUR_WEIGHT_SCALE = 0.1


def xyz_to_grid(volume: torch.Tensor) -> torch.Tensor:
    """A (R, R, R) or (R, R, R, C) volume indexed [x, y, z] as the (1, C, R, R, R) [z, y, x] grid `grid_sample`
    reads with (x, y, z) coordinates."""
    if volume.dim() == 3:
        volume = volume[..., None]
    return volume.permute(3, 2, 1, 0)[None].contiguous()


def sample_scalar_grid(grid: torch.Tensor, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear values of a (1, 1, R, R, R) grid (see `xyz_to_grid`) at (N, 3) world points: (N,)."""
    coords = (points / bound).clamp(-1.0, 1.0).reshape(1, 1, 1, -1, 3)
    return F.grid_sample(grid, coords, mode="bilinear", align_corners=True).reshape(-1)


def sample_vector_grid(grid: torch.Tensor, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear values of a (1, C, R, R, R) grid at (N, 3) world points: (N, C)."""
    coords = (points / bound).clamp(-1.0, 1.0).reshape(1, 1, 1, -1, 3)
    return F.grid_sample(grid, coords, mode="bilinear", align_corners=True).reshape(grid.shape[1], -1).t()


def start_grid(resolution: int, channels: int = 1) -> torch.Tensor:
    return torch.zeros(1, channels, resolution, resolution, resolution)


def feature_grids(resolutions: tuple[int, ...], features: int, init_scale: float) -> nn.ParameterList:
    return nn.ParameterList(nn.Parameter(torch.empty(1, features, r, r, r).uniform_(-init_scale, init_scale))
                            for r in resolutions)


def forward_difference_gradient(fn, points: torch.Tensor, eps: float) -> torch.Tensor:
    """d fn / d x at (N, 3) points from 4 evaluations each (differentiable): first-order accuracy at voxel
    scale is plenty for shading and the eikonal term, at 4 probes per point instead of central's 6."""
    offsets = torch.cat([torch.zeros(1, 3, device=points.device, dtype=points.dtype),
                         torch.eye(3, device=points.device, dtype=points.dtype) * eps])
    values = fn((points[:, None, :] + offsets).reshape(-1, 3)).reshape(-1, 4)
    return (values[:, 1:] - values[:, :1]) / eps
