"""A colour on its own: feature grids and a small MLP -> albedo, for a locked geometry (texture-only runs)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
from torch import nn

from .base import START_COLOUR_WEIGHT_SCALE, feature_grids, sample_grids, sample_vector_grid, start_grid, xyz_to_grid


@dataclass(frozen=True)
class ColourConfig:
    bound: float = 1.0
    #: Grid levels: a 64^2 render resolves about a 64th of the scene, so finer levels would learn noise.
    resolutions: tuple[int, ...] = (16, 32, 64)
    features_per_level: int = 2
    hidden: int = 32
    init_scale: float = 1e-2
    #: Nodes per axis of the start colours' grid (sRGB logits the learnt colour adds to); 0: none.
    start_colour_resolution: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ColourConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items() if k in known})


class ColourField(nn.Module):
    def __init__(self, config: ColourConfig = ColourConfig()):
        super().__init__()
        self.config = config
        c = config.features_per_level
        self.grids = feature_grids(config.resolutions, c, config.init_scale)
        self.mlp = nn.Sequential(nn.Linear(c * len(config.resolutions), config.hidden), nn.SiLU(),
                                 nn.Linear(config.hidden, 3))
        if config.start_colour_resolution:
            self.start_colour = nn.Parameter(start_grid(config.start_colour_resolution, 3))
            self.mlp[-1].weight.data.mul_(START_COLOUR_WEIGHT_SCALE)
            nn.init.zeros_(self.mlp[-1].bias)

    def set_start_colour(self, logits: torch.Tensor) -> None:
        """(R, R, R, 3) sRGB logits indexed [x, y, z] (see Geometry.set_start_colour)."""
        with torch.no_grad():
            self.start_colour.copy_(xyz_to_grid(logits).to(self.start_colour))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) sRGB albedo in [0, 1]."""
        logits = self.mlp(sample_grids(self.grids, points, self.config.bound))
        if self.config.start_colour_resolution:
            logits = logits + sample_vector_grid(self.start_colour, points, self.config.bound)
        return torch.sigmoid(logits)
