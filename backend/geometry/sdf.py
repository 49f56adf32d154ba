"""The signed-distance geometry: the shape is the zero level set of a learnt SDF, rendered through VolSDF.

Why: a density field trained by SDS against a small prior stays soft (fog
the prior judges, a mesh whose look depends on which iso-level is drawn).
Here density is a fixed function of signed distance s (VolSDF, Yariv et
al. 2021): sigma = Psi_beta(-s) / beta, the Laplace CDF, so everything
inside is opaque, everything a few beta outside is empty, and the mesh is
s = 0 with no level to choose. beta (the wall's thickness) falls over the
run, from soft enough that SDS moves the wall to about a voxel. An eikonal
term keeps |grad s| near 1 so that beta really is a thickness.

Shape and colour live in separate grids and MLPs (`shape_*` / `colour_*`)
so one can be frozen while the other trains. The initial surface is a
sphere of `radius` (or, with `start_resolution`, a start mesh's signed distance on a grid): the shape
MLP's last layer starts at zero, so the learnt part adds to that start.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from .base import (START_COLOUR_WEIGHT_SCALE, Geometry, GeometryConfig, feature_grids, forward_difference_gradient,
                   sample_grids, sample_scalar_grid, sample_vector_grid, start_grid)
from .registry import register_geometry


@dataclass(frozen=True)
class SDFConfig(GeometryConfig):
    """Shape of an SDFField and its sharpness schedule."""

    geometry: ClassVar[str] = "sdf"
    #: Grid levels; empty: 16, 32, ... up to the render resolution (at most 128). A prior cannot judge
    #: detail finer than its render's pixel, so finer levels only learn noise: on the toy prior's 32^2
    #: renders, levels 16-32 gave a roughness of 4.6 deg where 16-64 gave 6.4 (9.9 with a thicker wall);
    #: and fine levels are the most expensive to sample and update.
    resolutions: tuple[int, ...] = ()
    features_per_level: int = 2
    hidden: int = 32
    #: Colour grids; empty: the same levels as the shape's.
    colour_resolutions: tuple[int, ...] = ()
    colour_features_per_level: int = 2
    #: The initial surface: a sphere of this radius at the origin.
    radius: float = 0.5
    init_scale: float = 1e-2
    #: VolSDF's beta (metres): geometric from `beta_start` to `beta_end` over the first `beta_anneal` of the run.
    #: Thick early, so SDS moves the wall; at the end thinner than a 64^2 pixel (a red-cube tuning run: 5 % of
    #: a render's visible pixels partly transparent at 0.003, 7 % at 0.005, 22 % at 0.03).
    beta_start: float = 0.08
    beta_end: float = 0.003
    beta_anneal: float = 1.0
    #: Eikonal points per step: the render's surface points jittered by `eikonal_jitter`, plus this many
    #: uniform in the bound, so the SDF stays a distance where rays travel, not only on the surface.
    eikonal_uniform: int = 1024
    eikonal_jitter: float = 0.05
    #: Coarse to fine: the finer grid levels fade in one after another over this share of the run,
    #: so the shape settles on the coarse levels before the fine ones can add (noise-driven) detail
    #: (tuning runs: a cube's roughness 5.2 deg with it, 7.8 without; a cone's Chamfer 0.049 vs 0.074).
    coarse_to_fine: float = 0.3
    #: Samples less opaque than this skip the gradient pass: outside the wall s has no gradient to give
    #: (400 toy steps in 160 s instead of 273 s).
    min_sample_alpha: float = 1e-3

    def for_render(self, render_resolution: int) -> "SDFConfig":
        return resolve_for_render(self, render_resolution)


MAX_AUTO_RESOLUTION = 128


def levels_for_render(render_resolution: int) -> tuple[int, ...]:
    """16, 32, ... up to the render resolution (at most MAX_AUTO_RESOLUTION), never fewer than (16,)."""
    levels, r = [16], 32
    while r <= min(render_resolution, MAX_AUTO_RESOLUTION):
        levels.append(r)
        r *= 2
    return tuple(levels)


def resolve_for_render(config: SDFConfig, render_resolution: int) -> SDFConfig:
    """`config` with empty grid levels filled in for renders of `render_resolution` pixels."""
    shape = config.resolutions or levels_for_render(render_resolution)
    return dataclasses.replace(config, resolutions=shape, colour_resolutions=config.colour_resolutions or shape)


def volsdf_density(sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """sigma = Psi_beta(-s) / beta with Psi_beta the CDF of a zero-mean Laplace of scale beta."""
    half = 0.5 * torch.exp(-sdf.abs() / beta)
    return torch.where(sdf > 0, half, 1.0 - half) / beta


class SignedDistanceGeometry(Geometry):
    """Density, normals and the eikonal term from `signed_distance`; subclasses give that and `albedo`.
    Not registered: analytic subclasses (the toy prior's primitives, tests' spheres) are built in code."""

    surface = "sdf"
    beta: float
    #: The renderer skips the gradient pass for samples less opaque than this (see SDFConfig).
    min_sample_alpha: float = 1e-3

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gradient_eps(self) -> float:
        return 1e-3

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return volsdf_density(self.signed_distance(points), self.beta)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(points), self.albedo(points)

    def gradient(self, points: torch.Tensor) -> torch.Tensor:
        return forward_difference_gradient(self.signed_distance, points, self.gradient_eps())

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.gradient(points), dim=-1, eps=1e-12)

    def extract(self, resolution: int, occupancy=None, iso: float | None = None):
        """The zero level set, refined coarse to fine (`extract.extract_zero_level`); `occupancy` and `iso` do
        not apply."""
        from ..extract import extract_zero_level

        return extract_zero_level(self, resolution)


@register_geometry
class SDFField(SignedDistanceGeometry):
    """A learnt SDF (|x| - radius + MLP(shape grids)) and albedo (MLP(colour grids)), rendered through VolSDF."""

    config_class = SDFConfig

    def __init__(self, config: SDFConfig = SDFConfig()):
        super().__init__()
        config = resolve_for_render(config, 32)  # built directly: levels for 32-pixel renders unless given
        self.config = config
        c, cc = config.features_per_level, config.colour_features_per_level
        self.shape_grids = feature_grids(config.resolutions, c, config.init_scale)
        self.shape_mlp = nn.Sequential(nn.Linear(c * len(config.resolutions), config.hidden), nn.SiLU(),
                                       nn.Linear(config.hidden, 1))
        nn.init.zeros_(self.shape_mlp[-1].weight)
        nn.init.zeros_(self.shape_mlp[-1].bias)
        self.colour_grids = feature_grids(config.colour_resolutions, cc, config.init_scale)
        self.colour_mlp = nn.Sequential(nn.Linear(cc * len(config.colour_resolutions), config.hidden), nn.SiLU(),
                                        nn.Linear(config.hidden, 3))
        self.beta = config.beta_start
        # Per-feature weights of the coarse-to-fine schedule (set_progress); not saved: the step sets them.
        self.register_buffer("level_weights", torch.ones(c * len(config.resolutions)), persistent=False)
        if config.start_resolution:
            self.register_buffer("start_sdf", start_grid(config.start_resolution))
        if config.start_colour_resolution:
            self.start_colour = nn.Parameter(start_grid(config.start_colour_resolution, 3))
            self.colour_mlp[-1].weight.data.mul_(START_COLOUR_WEIGHT_SCALE)
            nn.init.zeros_(self.colour_mlp[-1].bias)

    def grid_parameters(self) -> list[nn.Parameter]:
        start = [self.start_colour] if self.config.start_colour_resolution else []
        return [*self.shape_grids, *self.colour_grids, *start]

    def network_parameters(self) -> list[nn.Parameter]:
        return [*self.shape_mlp.parameters(), *self.colour_mlp.parameters()]

    def gradient_eps(self) -> float:
        # A quarter of the finest cell: the local slope of the trilinear grids, with little curvature bias.
        return self.config.bound / (4 * max(self.config.resolutions))

    @property
    def min_sample_alpha(self) -> float:
        return self.config.min_sample_alpha

    def set_progress(self, step: int, steps: int) -> None:
        cfg = self.config
        progress = min(1.0, step / max(1.0, cfg.beta_anneal * steps))
        self.beta = math.exp(math.log(cfg.beta_start) + progress * (math.log(cfg.beta_end) - math.log(cfg.beta_start)))
        fine = len(cfg.resolutions) - 1
        ramp = step / max(1.0, cfg.coarse_to_fine * steps) * fine if cfg.coarse_to_fine > 0 else float(fine)
        weights = [1.0] + [min(1.0, max(0.0, ramp - (i - 1))) for i in range(1, fine + 1)]
        self.level_weights.copy_(torch.tensor(weights).repeat_interleave(cfg.features_per_level))

    def start(self, points: torch.Tensor) -> torch.Tensor:
        """The signed distance the run starts from: the start mesh's, or the sphere's."""
        if self.config.start_resolution:
            return sample_scalar_grid(self.start_sdf, points, self.config.bound)
        return points.norm(dim=-1) - self.config.radius

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        features = sample_grids(self.shape_grids, points, self.config.bound) * self.level_weights
        return self.start(points) + self.shape_mlp(features)[:, 0]

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        logits = self.colour_mlp(sample_grids(self.colour_grids, points, self.config.bound))
        if self.config.start_colour_resolution:
            logits = logits + sample_vector_grid(self.start_colour, points, self.config.bound)
        return torch.sigmoid(logits)

    def losses(self, surface_points: torch.Tensor, generator: torch.Generator,
               weights: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """eikonal: mean (|grad s| - 1)^2 near the surface and across the volume."""
        cfg, device = self.config, surface_points.device
        eikonal = weights.get("eikonal", 0.0)
        if eikonal <= 0.0:
            return {}
        near = surface_points.detach() + cfg.eikonal_jitter * torch.randn(
            surface_points.shape, generator=generator).to(device)
        uniform = (torch.rand(cfg.eikonal_uniform, 3, generator=generator) * 2.0 - 1.0).to(device) * cfg.bound
        points = torch.cat([near, uniform]).clamp(-cfg.bound, cfg.bound)
        return {"eikonal": eikonal * ((self.gradient(points).norm(dim=-1) - 1.0) ** 2).mean()}

    @staticmethod
    def loss_weights(spec) -> dict[str, float]:
        return {"eikonal": spec.geometry_options.eikonal_weight}  # SDFOptions (shared/geometry_options.py)
