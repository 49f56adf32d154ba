"""Volume rendering of a field: rays, stratified samples with empty-space skipping, compositing, shading.

Normals are taken once per ray at the expected surface point (deferred
shading) instead of at every sample: 4 probes per ray rather than per
sample, which is what makes lambertian steps cheap on a CPU. The field is
any `Geometry` (backend/geometry/) (or an analytic one with the same methods).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .cameras import Cameras, camera_rays
from .occupancy import OccupancyGrid

SHADINGS = ("albedo", "lambertian", "textureless")
#: The fixed JobSpec background modes, as linear RGB.
BACKGROUND_COLOURS = {"grey": (0.5, 0.5, 0.5), "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def sample_ambient(ambient: tuple[float, float], n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) ambient light shares, uniform in a JobSpec's `ambient` range, one per view."""
    low, high = ambient
    return low + (high - low) * torch.rand(n, generator=generator)


def sample_backgrounds(mode: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3) background colours for a JobSpec `background` mode; 'random' draws one per view."""
    if mode == "random":
        return torch.rand(n, 3, generator=generator)
    return torch.tensor(BACKGROUND_COLOURS[mode]).expand(n, 3).clone()


@dataclass(frozen=True)
class RenderConfig:
    """How rays are sampled: samples and occupancy probes per ray, and whether hidden samples are skipped."""

    #: Stratified samples per ray, spread over the part of the ray that crosses occupied cells.
    samples_per_ray: int = 48
    #: Occupancy probes per ray used to find that part.
    probes_per_ray: int = 128
    #: Evaluate (and backpropagate through) only samples a ray still sees: a cheap no-grad pass finds
    #: where transmittance drops below `min_transmittance`; what lies behind contributes nothing visible.
    cull_hidden: bool = True
    min_transmittance: float = 1e-4


@dataclass
class Render:
    rgb: torch.Tensor        # (B, 3, H, W) in [0, 1]
    opacity: torch.Tensor    # (B, 1, H, W)
    depth: torch.Tensor      # (B, 1, H, W) distance along the ray (0 where empty)
    normal: torch.Tensor     # (B, 3, H, W) world-space unit normals (0 where empty)
    orientation: torch.Tensor  # scalar: DreamFusion's orientation loss
    evaluated: int  # field evaluations with gradient, after skipping empty and hidden space
    culled: int = 0  # samples dropped as hidden behind the surface (when cull_hidden is on)
    #: (M, 3) expected surface points of the rays that hit something, detached (where the eikonal term looks).
    surface_points: torch.Tensor | None = None


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through [-bound, bound]^3 (near == far when missed)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, torch.maximum(far, near)


def occupied_interval(occupancy: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
                      far: torch.Tensor, probes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink [near, far] to the stretch of each ray that crosses occupied cells (empty rays: near == far).

    Samples then go where something is, instead of being spent and skipped in empty space.
    """
    bins = (far - near) / probes
    t = near[:, None] + (torch.arange(probes, device=near.device)[None] + 0.5) * bins[:, None]
    hits = occupancy.query((origins[:, None, :] + dirs[:, None, :] * t[..., None]).reshape(-1, 3))
    hits = hits.reshape(-1, probes)
    first = hits.float().argmax(dim=1)
    last = probes - 1 - hits.flip(1).float().argmax(dim=1)
    any_hit = hits.any(dim=1)
    # Widen by one probe bin on each side: a probe only saw its bin's centre.
    new_near = (near + first * bins - bins).clamp_min(near)
    new_far = torch.minimum(near + (last + 1) * bins + bins, far)
    new_far = torch.where(any_hit, new_far, new_near)
    return new_near, new_far


@torch.no_grad()
def _visible(field, flat: torch.Tensor, keep: torch.Tensor, step: torch.Tensor, n: int, s: int,
             min_transmittance: float) -> torch.Tensor:
    density = torch.zeros(n * s, device=flat.device)
    density[keep] = field.density(flat[keep])
    alpha, transmittance = _alpha_transmittance(density.reshape(n, s), step)
    visible = keep & (transmittance > min_transmittance).reshape(-1)
    # A geometry whose density gradient vanishes with its density (an SDF's, outside its wall) learns
    # nothing from samples that are all but empty: drop those too. A density field's empty samples carry
    # the gradient that grows it into empty space, so it keeps them (min_sample_alpha 0).
    min_alpha = getattr(field, "min_sample_alpha", 0.0)
    if min_alpha > 0.0:
        visible &= (alpha > min_alpha).reshape(-1)
    return visible


def _alpha_transmittance(density: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample opacity and the transmittance reaching each sample (exclusive product), (N, S) each."""
    alpha = 1.0 - torch.exp(-density * step[:, None])
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1),
                                  dim=1)
    return alpha, transmittance


def render(field, cameras: Cameras, resolution: int, *, shading: str = "albedo",
           ambient: torch.Tensor | float = 0.1, background: torch.Tensor | None = None,
           occupancy: OccupancyGrid | None = None, generator: torch.Generator | None = None,
           with_orientation: bool = True, config: RenderConfig = RenderConfig()) -> Render:
    """Render B images of `field` seen by `cameras`.

    `background`: (B, 3) colours (default white). `generator`: jitters the
    samples (stratified); None samples at bin centres (deterministic previews).
    """
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    device = cameras.positions.device
    b, s = len(cameras), config.samples_per_ray
    origins, dirs = camera_rays(cameras, resolution)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    n = origins.shape[0]
    near, far = ray_box(origins, dirs, field.bound)
    if occupancy is not None:
        near, far = occupied_interval(occupancy, origins, dirs, near, far, config.probes_per_ray)
    if generator is None:
        u = torch.full((n, s), 0.5, device=device)
    else:
        u = torch.rand((n, s), generator=generator).to(device)
    step = (far - near) / s
    t = near[:, None] + (torch.arange(s, device=device)[None] + u) * step[:, None]
    points = origins[:, None, :] + dirs[:, None, :] * t[..., None]

    flat = points.reshape(-1, 3)
    keep = (step > 0).repeat_interleave(s)
    if occupancy is not None:
        keep = keep & occupancy.query(flat)
    culled = 0
    if config.cull_hidden and keep.any():
        visible = _visible(field, flat, keep, step, n, s, config.min_transmittance)
        culled = int(keep.sum() - visible.sum())
        keep = visible
    density = torch.zeros(n * s, device=device)
    albedo = torch.zeros(n * s, 3, device=device)
    if keep.any():
        index = (keep.nonzero().squeeze(1),)
        d, a = field(flat[keep])
        density = density.index_put(index, d)
        albedo = albedo.index_put(index, a)
    density, albedo = density.reshape(n, s), albedo.reshape(n, s, 3)

    alpha, transmittance = _alpha_transmittance(density, step)
    weights = alpha * transmittance
    opacity = weights.sum(dim=1)
    depth = (weights * t).sum(dim=1) / opacity.clamp_min(1e-6)
    colour = (weights[..., None] * albedo).sum(dim=1)  # premultiplied by opacity

    normal = torch.zeros_like(origins)
    orientation = torch.zeros((), device=device)
    surface = origins + dirs * depth[:, None]
    hit = opacity.detach() > 1e-3
    if shading != "albedo" or with_orientation:
        if hit.any():
            normal = normal.index_put((hit.nonzero().squeeze(1),), field.normals(surface[hit]))
        facing_away = (normal * dirs).sum(dim=-1).clamp_min(0.0)
        orientation = (opacity.detach() * facing_away**2).mean()
    if shading != "albedo":
        light = cameras.lights.repeat_interleave(resolution * resolution, dim=0)
        amb = torch.as_tensor(ambient, device=device, dtype=torch.float32).reshape(-1)
        amb = amb.repeat_interleave(resolution * resolution) if amb.numel() == b else amb.expand(n)
        to_light = F.normalize(light - surface, dim=-1)
        diffuse = (normal * to_light).sum(dim=-1).clamp_min(0.0)
        shade = amb + (1.0 - amb) * diffuse
        base = colour if shading == "lambertian" else opacity[:, None].expand(-1, 3)
        colour = base * shade[:, None]

    if background is None:
        background = torch.ones(b, 3, device=device)
    bg = background.to(device).repeat_interleave(resolution * resolution, dim=0)
    rgb = colour + (1.0 - opacity[:, None]) * bg

    def image(x: torch.Tensor, channels: int) -> torch.Tensor:
        return x.reshape(b, resolution, resolution, channels).permute(0, 3, 1, 2)

    depth = depth * (opacity > 1e-3)
    return Render(rgb=image(rgb, 3), opacity=image(opacity[:, None], 1), depth=image(depth[:, None], 1),
                  normal=image(normal, 3), orientation=orientation,
                  evaluated=int(keep.sum()), culled=culled, surface_points=surface[hit].detach())
