"""Analytic primitives as radiance fields (the Geometry interface of backend/geometry/), for making the prior's training renders.

Centred at the origin, upright on +Z, at a fixed yaw: the cube's faces look
along +-X / +-Y (its front toward -Y, the front camera), cone apex up,
cylinder and torus axes along Z. Sizes fill the default camera framing.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: Density = DENSITY * sigmoid(-sdf / SOFTNESS): solid inside, a crisp but differentiable wall.
DENSITY = 300.0
SOFTNESS = 0.006


def sdf(shape: str, p: torch.Tensor) -> torch.Tensor:
    x, y, z = p.unbind(-1)
    if shape == "sphere":
        return p.norm(dim=-1) - 0.5
    if shape == "cube":
        q = p.abs() - 0.4
        return q.clamp_min(0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0)
    if shape == "cylinder":
        d = torch.stack([torch.hypot(x, y) - 0.4, z.abs() - 0.42], -1)
        return d.clamp_min(0).norm(dim=-1) + d.amax(dim=-1).clamp_max(0)
    if shape == "torus":
        return torch.stack([torch.hypot(x, y) - 0.4, z], -1).norm(dim=-1) - 0.17
    if shape == "cone":
        return _capped_cone(torch.hypot(x, y), z, half_height=0.45, r_bottom=0.48, r_top=0.0)
    raise ValueError(f"unknown shape {shape!r}")


def _capped_cone(qx: torch.Tensor, qy: torch.Tensor, half_height: float, r_bottom: float, r_top: float):
    """Inigo Quilez's exact capped-cone distance, axis along the second coordinate."""
    h = half_height
    k1 = torch.tensor([r_top, h])
    k2 = torch.tensor([r_top - r_bottom, 2.0 * h])
    ca = torch.stack([qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qx, r_bottom),
                                                         torch.full_like(qx, r_top))), qy.abs() - h], -1)
    q = torch.stack([qx, qy], -1)
    t = (((k1 - q) * k2).sum(-1) / (k2 * k2).sum()).clamp(0.0, 1.0)
    cb = q - k1 + k2 * t[..., None]
    sign = torch.where((cb[..., 0] < 0) & (ca[..., 1] < 0), -1.0, 1.0)
    return sign * torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)).sqrt()


class PrimitiveField(torch.nn.Module):
    bound = 1.0

    def __init__(self, shape: str, colour=(0.8, 0.8, 0.8)):
        super().__init__()
        self.shape = shape
        self.register_buffer("colour", torch.tensor(colour, dtype=torch.float32))

    def forward(self, points: torch.Tensor):
        density = DENSITY * torch.sigmoid(-sdf(self.shape, points) / SOFTNESS)
        return density, self.colour.expand(points.shape[0], 3)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self(points)[0]

    def normals(self, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        offsets = torch.eye(3, dtype=points.dtype) * eps
        grad = torch.stack([sdf(self.shape, points + o) - sdf(self.shape, points - o) for o in offsets], -1)
        return F.normalize(grad, dim=-1)
