"""Perp-Neg (Armandpour et al. 2023) against the multi-face (Janus) problem, for every prior.

Plain view-dependent prompting only appends "side view" to the prompt; a prior
that has seen mostly front views still draws a face. Perp-Neg blends the view
prompts by azimuth for the positive and pushes away from the *other* views,
but only along the part of their guidance perpendicular to the positive's, so
the push never cancels what the positive asks for:

    eps_hat = eps_u + s * (d0 + sum_i w_i * perp(d_i, d0)),   d_i = eps(c_i) - eps_u,
    perp(x, y) = x - <x, y> / max(|y|^2, 1e-6) * y   (per sample).

The blend and the negative weights follow stable-dreamfusion (`--perpneg`,
`--negative_w -2`, front decay 2, side decay 10): `strength` here is the size
of its negative_w (2 there). threestudio's exponentials are fitted to the same
shape. Overhead views get the overhead prompt and no negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..cameras import OVERHEAD_ELEVATION, wrap_degrees

#: stable-dreamfusion's decay rates of the front and side negatives with the blend ratio.
FRONT_DECAY = 2.0
SIDE_DECAY = 10.0
#: A negative is dropped once the blend is this close to its own view (its weight would be large and wrong).
NEAR_OWN_VIEW = 0.8


@dataclass(frozen=True)
class PerpNeg:
    """What SDS needs to apply Perp-Neg for one job: its strength and the prompt of each view."""

    strength: float
    view_prompts: dict[str, str]  # "front", "side", "back", "overhead" -> the prompt scored for that view


@dataclass(frozen=True)
class ViewTerms:
    """One camera's conditioning under Perp-Neg."""

    positive: dict[str, float]              # view name -> blend coefficient (sums to 1)
    negatives: tuple[tuple[str, float], ...]  # (view name, weight w_i); weights are <= 0


def view_terms(azimuth_deg: float, elevation_deg: float, strength: float) -> ViewTerms:
    """The positive blend and the negative views with their weights for a camera (Blender's frame: 0 = front)."""
    if elevation_deg >= OVERHEAD_ELEVATION:
        return ViewTerms({"overhead": 1.0}, ())
    w = -abs(strength)
    azimuth = abs(float(wrap_degrees(azimuth_deg)))
    if azimuth < 90.0:
        r = 1.0 - azimuth / 90.0  # 1 at the front, 0 at the side
        front = 0.0 if r > NEAR_OWN_VIEW else w * math.exp(-r * FRONT_DECAY)
        side = 0.0 if r < 1.0 - NEAR_OWN_VIEW else w * math.exp(-(1.0 - r) * SIDE_DECAY)
        return ViewTerms(_blend({"front": r, "side": 1.0 - r}), (("front", front), ("side", side)))
    r = 2.0 - azimuth / 90.0  # 1 at the side, 0 at the back
    side = 0.0 if r > NEAR_OWN_VIEW else w * math.exp(-r * SIDE_DECAY) / 2.0
    return ViewTerms(_blend({"side": r, "back": 1.0 - r}), (("side", side), ("front", w)))


def _blend(weights: dict[str, float]) -> dict[str, float]:
    return {view: c for view, c in weights.items() if c > 0.0}


def perpendicular(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample (dim 0), the part of x perpendicular to y."""
    dims = tuple(range(1, x.ndim))
    dot = (x * y).sum(dim=dims, keepdim=True)
    norm2 = (y * y).sum(dim=dims, keepdim=True).clamp_min(1e-6)
    return x - dot / norm2 * y


def perp_neg_guidance(eps_uncond: torch.Tensor, eps_positive: torch.Tensor, eps_negatives: torch.Tensor,
                      weights: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_u + s (d0 + sum_i w_i perp(d_i, d0)). eps_negatives is (B, K, ...) and weights (B, K)."""
    d0 = eps_positive - eps_uncond
    push = torch.zeros_like(d0)
    for i in range(eps_negatives.shape[1]):
        w = weights[:, i].to(d0.dtype).view(-1, *([1] * (d0.ndim - 1)))
        push = push + w * perpendicular(eps_negatives[:, i] - eps_uncond, d0)
    return eps_uncond + scale * (d0 + push)
