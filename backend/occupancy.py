"""A coarse occupancy grid so rendering and extraction skip empty space.

Each cell keeps a decaying maximum of the density seen at a random point in
it; a cell is occupied when that exceeds a threshold, dilated by one cell so
surfaces can still grow into their neighbourhood (skipped samples get no
gradient).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class OccupancyGrid(nn.Module):
    def __init__(self, bound: float, resolution: int = 64, threshold: float = 0.01, decay: float = 0.95):
        super().__init__()
        self.bound, self.resolution, self.threshold, self.decay = bound, resolution, threshold, decay
        # Start all-occupied: nothing is known to be empty yet.
        self.register_buffer("density", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("mask", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_centres(self, jitter: torch.Tensor | None = None) -> torch.Tensor:
        r = self.resolution
        idx = torch.stack(torch.meshgrid(*(torch.arange(r, device=self.density.device),) * 3, indexing="ij"), -1)
        offset = 0.5 if jitter is None else jitter
        return ((idx.float() + offset) / r * 2.0 - 1.0) * self.bound

    @torch.no_grad()
    def update(self, density_fn, generator: torch.Generator | None = None, chunk: int = 2**18) -> None:
        jitter = torch.rand((self.resolution,) * 3 + (3,), generator=generator).to(self.density.device)
        points = self.cell_centres(jitter).reshape(-1, 3)
        fresh = torch.cat([density_fn(p) for p in points.split(chunk)]).reshape(self.density.shape)
        previous = torch.where(torch.isinf(self.density), torch.zeros_like(fresh), self.density * self.decay)
        self.density.copy_(torch.maximum(previous, fresh))
        occupied = (self.density > self.threshold).float()[None, None]
        self.mask.copy_(F.max_pool3d(occupied, 3, stride=1, padding=1)[0, 0] > 0)

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """Boolean (N,) occupancy of world points; points outside the bound are empty."""
        r = self.resolution
        cell = ((points / self.bound + 1.0) * 0.5 * r).floor().long()
        inside = ((cell >= 0) & (cell < r)).all(dim=-1)
        cell = cell.clamp(0, r - 1)
        return inside & self.mask[cell[:, 0], cell[:, 1], cell[:, 2]]

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
