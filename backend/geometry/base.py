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
    #: How extraction finds the surface: "density" (an iso-level of density) or "sdf" (the zero level set).
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

    def regulariser(self, surface_points: torch.Tensor, generator: torch.Generator,
                    weights: Mapping[str, float]) -> torch.Tensor | None:
        """The weighted sum of the losses the geometry itself needs (the SDF's `eikonal`), by name, looking
        near the render's (M, 3) surface points; None when it needs none at these weights."""
        return None


def sample_grids(grids: nn.ParameterList, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear features of (N, 3) world points from dense (1, C, R, R, R) grids, concatenated: (N, sum C)."""
    coords = (points / bound).clamp(-1.0, 1.0).reshape(1, 1, 1, -1, 3)
    feats = [F.grid_sample(g, coords, mode="bilinear", align_corners=True).reshape(g.shape[1], -1) for g in grids]
    # (N, C) contiguous: the MLP's matmuls are ~25% faster than on the transposed view.
    return torch.cat(feats, dim=0).t().contiguous()


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
