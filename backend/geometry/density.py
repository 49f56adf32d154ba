"""The density geometry: multi-resolution dense feature grids + a small MLP -> density and albedo.

Pure PyTorch (trilinear `grid_sample`, no custom kernels), so it runs the
same on CPU and CUDA. DreamFusion's density blob is added before the
activation so optimisation starts from a soft ball at the origin. Its
surface is an iso-level of density that extraction has to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .base import (START_COLOUR_WEIGHT_SCALE, Geometry, GeometryConfig, feature_grids, forward_difference_gradient,
                   sample_grids, sample_scalar_grid, sample_vector_grid, start_grid)
from .registry import register_geometry


@dataclass(frozen=True)
class DensityConfig(GeometryConfig):
    """Shape of a DensityField: grid resolutions and channels, MLP width, the initial blob."""

    geometry: ClassVar[str] = "density"
    resolutions: tuple[int, ...] = (16, 32, 64, 128)
    features_per_level: int = 2
    hidden: int = 32
    #: DreamFusion's blob: lambda * (1 - r / radius) added to the raw density.
    blob_density: float = 10.0
    blob_radius: float = 0.5
    init_scale: float = 1e-2
    #: A start mesh (start_resolution > 0) replaces the blob by `start_level - start_slope * s` for its signed
    #: distance s: extraction's default density level (5) on the mesh's surface, and a wall a few mm thick (at
    #: 200 / m the haze outside a flat box made its silhouettes pick a level 2.7 % of its size outside it).
    start_level: float = 5.0
    start_slope: float = 1000.0


@register_geometry
class DensityField(Geometry):
    """Density and albedo from one set of feature grids (the geometry of DreamFusion and our first release)."""

    config_class = DensityConfig
    surface = "density"

    def __init__(self, config: DensityConfig = DensityConfig()):
        super().__init__()
        self.config = config
        c = config.features_per_level
        self.grids = feature_grids(config.resolutions, c, config.init_scale)
        self.mlp = nn.Sequential(nn.Linear(c * len(config.resolutions), config.hidden), nn.SiLU(),
                                 nn.Linear(config.hidden, 4))
        if config.start_resolution:
            self.register_buffer("start_sdf", start_grid(config.start_resolution))
        if config.start_colour_resolution:
            self.start_colour = nn.Parameter(start_grid(config.start_colour_resolution, 3))
            with torch.no_grad():  # the learnt colour starts at zero on top of the start colours
                self.mlp[-1].weight[1:].mul_(START_COLOUR_WEIGHT_SCALE)
                self.mlp[-1].bias[1:].zero_()

    def grid_parameters(self) -> list[nn.Parameter]:
        start = [self.start_colour] if self.config.start_colour_resolution else []
        return [*self.grids, *start]

    def network_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 4) raw outputs."""
        return self.mlp(sample_grids(self.grids, points, self.config.bound))

    def blob(self, points: torch.Tensor) -> torch.Tensor:
        """The raw density the run starts from: DreamFusion's blob, or the start mesh's solid."""
        cfg = self.config
        if cfg.start_resolution:
            sdf = sample_scalar_grid(self.start_sdf, points, cfg.bound)
            return (cfg.start_level - cfg.start_slope * sdf).clamp(-30.0, 60.0)
        return cfg.blob_density * (1.0 - points.norm(dim=-1) / cfg.blob_radius)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self._raw(points)
        density = F.softplus(raw[:, 0] + self.blob(points))
        logits = raw[:, 1:]
        if self.config.start_colour_resolution:
            logits = logits + sample_vector_grid(self.start_colour, points, self.config.bound)
        albedo = torch.sigmoid(logits)
        return density, albedo

    def normals(self, points: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """-grad(density), normalised, by forward differences at voxel scale."""
        if eps is None:
            eps = self.config.bound / max(self.config.resolutions)
        return F.normalize(-forward_difference_gradient(self.density, points, eps), dim=-1, eps=1e-12)
