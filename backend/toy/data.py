"""Training images for the toy prior: the primitives rendered by the backend's own renderer.

Cameras, lights, ambient, shading mix and backgrounds are drawn exactly as the
SDS trainer draws them (from the toy's recommended JobSpec), so the prior
learns the image distribution it will later be asked to score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..cameras import sample_cameras, view_name
from ..renderer import SHADINGS, render, sample_ambient, sample_backgrounds
from .primitives import PrimitiveField
from .settings import training_spec
from .vocab import COLOUR_RGB, COLOURS, SHAPES, ToyPrompt

NO_COLOUR = -1


@dataclass
class ToyImages:
    images: np.ndarray     # (N, 3, R, R) uint8
    shapes: np.ndarray     # (N,) index into SHAPES
    colours: np.ndarray    # (N,) index into COLOURS, NO_COLOUR for textureless renders
    azimuth: np.ndarray    # (N,) degrees
    elevation: np.ndarray  # (N,) degrees

    def __len__(self) -> int:
        return len(self.shapes)

    def prompt(self, i: int, with_colour: bool = True, with_view: bool = True) -> str:
        # The same wording ToyGuidance scores against, so training and SDS prompts cannot drift apart.
        colour = COLOURS[self.colours[i]] if with_colour and self.colours[i] != NO_COLOUR else None
        view = view_name(float(self.azimuth[i]), float(self.elevation[i])) if with_view else None
        return ToyPrompt(SHAPES[self.shapes[i]], colour, view).text()


@torch.no_grad()
def make_images(count: int, resolution: int = 32, seed: int = 0, batch: int = 64,
                shape_weights: dict[str, float] | None = None) -> ToyImages:
    """`shape_weights` (default 1 each) sets how often each shape is drawn relative to the others."""
    spec = training_spec(seed)
    gen = torch.Generator().manual_seed(seed)
    weights = shape_weights or {}
    unknown = sorted(set(weights) - set(SHAPES))
    if unknown or any(w < 0 for w in weights.values()):
        raise ValueError(f"shape weights must be >= 0 for shapes among {', '.join(SHAPES)}; got {weights}")
    shape_p = torch.tensor([float(weights.get(s, 1.0)) for s in SHAPES])
    shading_p = torch.tensor([spec.shading_probabilities()[s] for s in SHADINGS])
    parts: dict[str, list] = {k: [] for k in ("images", "shapes", "colours", "azimuth", "elevation")}
    for _ in range(math.ceil(count / batch)):
        shape = int(torch.multinomial(shape_p, 1, generator=gen))
        colour = int(torch.randint(len(COLOURS), (1,), generator=gen))
        shading = SHADINGS[int(torch.multinomial(shading_p, 1, generator=gen))]
        cameras = sample_cameras(spec, batch, gen)
        ambient = sample_ambient(spec.ambient, batch, gen)
        background = sample_backgrounds(spec.background, batch, gen)
        field = PrimitiveField(SHAPES[shape], COLOUR_RGB[COLOURS[colour]])
        out = render(field, cameras, resolution, shading=shading, ambient=ambient, background=background,
                     generator=gen, with_orientation=False)
        parts["images"].append((out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        parts["shapes"].append(np.full(batch, shape))
        parts["colours"].append(np.full(batch, NO_COLOUR if shading == "textureless" else colour))
        parts["azimuth"].append(cameras.azimuth.numpy())
        parts["elevation"].append(cameras.elevation.numpy())
    arrays = {k: np.concatenate(v)[:count] for k, v in parts.items()}
    return ToyImages(**arrays)
