"""A locked geometry: a frozen shape with its own colour field, for texture-only runs (`lock_geometry`).

The shape (a start mesh's fitted geometry, or a checkpoint's) answers density
and normals without gradients, so SDS can only move the colour, however long
the run. Not registered: it is not a JobSpec `geometry` choice but a wrapper
around one; a checkpoint stores the shape under its own registry name plus
the colour field's config (`lock`).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import Geometry
from .colour import ColourField


class LockedGeometry(Geometry):
    def __init__(self, shape: Geometry, colour: ColourField):
        super().__init__()
        self.shape = shape.requires_grad_(False)
        self.colour = colour
        self.config = shape.config
        self.name = shape.name  # the checkpoint's type tag is the shape's
        self.surface = shape.surface
        # The shape at its final sharpness (an SDF's thinnest wall, every grid level in): it no longer trains.
        shape.set_progress(1, 1)

    @property
    def min_sample_alpha(self) -> float:
        return getattr(self.shape, "min_sample_alpha", 0.0)

    @property
    def beta(self) -> float:
        return getattr(self.shape, "beta")

    def density(self, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.shape.density(points)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(points), self.colour(points)

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return self.colour(points)

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.shape.signed_distance(points)

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.shape.normals(points)

    def grid_parameters(self) -> list[nn.Parameter]:
        start = [self.colour.start_colour] if self.colour.config.start_colour_resolution else []
        return [*self.colour.grids, *start]

    def network_parameters(self) -> list[nn.Parameter]:
        return list(self.colour.mlp.parameters())

    def set_progress(self, step: int, steps: int) -> None:
        pass  # the shape keeps its final schedule

    def losses(self, surface_points: torch.Tensor, generator: torch.Generator,
               weights: Mapping[str, float]) -> dict[str, torch.Tensor]:
        return {}  # the shape is frozen: its own losses would teach it nothing

    def extract(self, resolution: int, occupancy=None, iso: float | None = None):
        # The shape's own way of finding its surface, asked of this geometry: the frozen shape's surface,
        # coloured by the colour field.
        return type(self.shape).extract(self, resolution, occupancy, iso)
