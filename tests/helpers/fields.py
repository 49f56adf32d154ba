"""Analytic fields for tests: the Geometry interface of backend/geometry/ (bound, forward, density, normals)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from blender_dreamfusion.backend.geometry import SignedDistanceGeometry


class SphereField(torch.nn.Module):
    """Density `inside` within `radius` of `centre`, linear fall-off so the iso-5 surface sits at `radius`."""

    def __init__(self, radius: float = 0.5, centre=(0.0, 0.0, 0.0), colour=(0.8, 0.1, 0.1), sharpness: float = 200.0,
                 bound: float = 1.0):
        super().__init__()
        self.radius, self.sharpness, self.bound = radius, sharpness, bound
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
        self.register_buffer("colour", torch.tensor(colour, dtype=torch.float32))

    def forward(self, points):
        distance = (points - self.centre).norm(dim=-1)
        density = (5.0 + self.sharpness * (self.radius - distance)).clamp_min(0.0)
        return density, self.colour.expand(points.shape[0], 3)

    def density(self, points):
        return self(points)[0]

    def normals(self, points):
        return F.normalize(points - self.centre, dim=-1)


class EmptyField(SphereField):
    def forward(self, points):
        return torch.zeros(points.shape[0]), torch.zeros(points.shape[0], 3)


class TwoSpheres(torch.nn.Module):
    def __init__(self, big: SphereField, small: SphereField):
        super().__init__()
        self.big, self.small, self.bound = big, small, 1.0

    def forward(self, points):
        (d1, c1), (d2, c2) = self.big(points), self.small(points)
        return torch.maximum(d1, d2), torch.where((d1 >= d2)[:, None], c1, c2)

    def density(self, points):
        return self(points)[0]


class SphereSDF(SignedDistanceGeometry):
    """The exact signed distance to a sphere, rendered through VolSDF like the learnt SDF geometry."""

    name = "analytic-sphere"

    def __init__(self, radius: float = 0.5, beta: float = 0.005, offset: float = 0.0, bound: float = 1.0):
        super().__init__()
        self.radius, self.beta, self.offset, self._bound = radius, beta, offset, bound

    @property
    def bound(self) -> float:
        return self._bound

    def signed_distance(self, points):
        return points.norm(dim=-1) - self.radius + self.offset

    def albedo(self, points):
        return torch.tensor([0.8, 0.1, 0.1]).expand(points.shape[0], 3)
