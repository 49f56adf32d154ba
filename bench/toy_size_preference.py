"""Which size (or colour saturation) does a built-in toy prior's SDS pull an object toward? One JSON line per
prompt, then a summary.

    .venv/bin/python bench/toy_size_preference.py [--model toy-objects | FOLDER] [--prompts "a red cube" ...]
    .venv/bin/python bench/toy_size_preference.py --measure saturation

The true object (backend/toy/objects.py) is rendered scaled by s around its centre, from the prior's own
training scene (cameras, lights, backgrounds), and scored with SDS at the recommended guidance scale. The
SDS gradient on those images, projected on d(image)/ds, is how SDS would change s: a negative projection
grows the object, a positive one shrinks it. Every scale sees the same cameras, noise levels and noise
(common random numbers), so the curve over s is smooth, and where it crosses zero is the size the prior
settles an object at: `preferred_scale` (None, with `grows` or `shrinks`, when it does not cross in the
range). A prior whose preferred scale is far from 1 makes SDS results too large or too small whatever the
geometry does; this tells in a few minutes what a 30-run SDS table tells in hours.

Measured (the four default prompts, 32 views x 2 draws, about 5 minutes on one core): toy-objects' first
weights (predicting the noise) with plain guidance prefer 0.92-1.17 of the true size (mean 1.02); the v
fine-tune with plain guidance pulls a red cube and a green sphere toward growth at every scale up to 1.3 (SDS
made a red cube 100 % too large); with its colour word guided apart at 3 over the whole image 0.85-1.11
(mean 0.97); at 20 but only inside the object (what toy-objects does now, `--plain-guidance` turns it off)
0.80-1.23 (mean 0.99). With guidance 1 the pull nearly vanishes: it is the guided colour word that paints
beyond the object's edge. docs/toy-prior.md has the table.

`--measure saturation` asks the same of the named colour: the true object at true size is painted
grey + c (colour - grey) (grey of the colour's luminance) for c in 0.2-1.0, and the projection is on
d(image)/dc: `preferred_saturation` is where SDS stops saturating the colour and starts greying it. With the
colour word guided apart at 3 over the whole image, a red cube settled at 0.35 of its colour's saturation, a
green sphere at 0.74, a blue mug below 0.2 (SDS greyed them); at 20 inside the object (now) all three
saturate at every level.
"""

from __future__ import annotations

import argparse
import functools
import json

import torch

from blender_dreamfusion.backend.cameras import sample_cameras
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.guidance.base import Guidance
from blender_dreamfusion.backend.renderer import render, sample_ambient, sample_backgrounds
from blender_dreamfusion.backend.toy import parse_builtin_prompt
from blender_dreamfusion.backend.toy.object_data import training_spec
from blender_dreamfusion.backend.toy.objects import ObjectField
from blender_dreamfusion.backend.toy.vocab import COLOUR_RGB
from blender_dreamfusion.shared.recommended import recommendations

SCALES = (0.8, 0.9, 1.0, 1.15, 1.3)
#: Shares of the named colour's saturation, for --measure saturation.
SATURATIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
PROMPTS = ("a red cube", "a green sphere", "a white cone", "a blue mug")
#: The step for d(image)/ds (central differences): a share of the object's size, or of its colour's saturation.
STEP = {"size": 0.03, "saturation": 0.05}
#: Rec. 709 luminance weights: the grey a colour fades to keeps its lightness.
LUMINANCE = (0.2126, 0.7152, 0.0722)


class ScaledField(torch.nn.Module):
    """`inner` scaled by `scale` about the origin (every toy object stands centred on it)."""

    bound = 1.0

    def __init__(self, inner: ObjectField, scale: float):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, points: torch.Tensor):
        return self.inner(points / self.scale)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self(points)[0]

    def normals(self, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        return self.inner.normals(points / self.scale, eps)


def projections(guidance, prompt: str, scales, views: int, draws: int, guidance_scale: float,
                t_range: tuple[float, float], measure: str = "size") -> dict[float, float]:
    """value -> the SDS gradient projected on d(image)/d(value), per view (negative: SDS grows the object, or
    saturates its colour). `measure` "size": the values scale the object; "saturation": they are shares of
    the named colour's saturation."""
    asked = parse_builtin_prompt("toy-objects", prompt)
    rgb = torch.tensor(COLOUR_RGB[asked.colour] if asked.colour else (0.8, 0.8, 0.8))
    grey = float((rgb * torch.tensor(LUMINANCE)).sum())

    def field_at(value: float):
        if measure == "size":
            return ScaledField(ObjectField(asked.object, tuple(rgb.tolist()), asked.pattern), value)
        colour = (grey + value * (rgb - grey)).clamp(0.0, 1.0)
        return ObjectField(asked.object, tuple(colour.tolist()), asked.pattern)

    spec = training_spec(0)
    out = {}
    for scale in scales:
        total = 0.0
        for draw in range(draws):
            scene = torch.Generator().manual_seed(100 + draw)  # the same views and noise at every scale
            cameras = sample_cameras(spec, views, scene)
            ambient = sample_ambient(spec.ambient, views, scene)
            background = sample_backgrounds(spec.background, views, scene)

            def image(value: float):
                with torch.no_grad():
                    return render(field_at(value), cameras, guidance.input_size, shading="lambertian",
                                  ambient=ambient, background=background, generator=None,
                                  with_orientation=False)

            seen = image(scale)
            x = seen.rgb.clone().requires_grad_(True)
            step = STEP[measure]
            slope = (image(scale + step).rgb - image(scale - step).rgb) / (2 * step)
            noise = torch.Generator().manual_seed(7 + draw)
            result = guidance.sds(x, [guidance.condition_prompt(prompt, "lambertian")] * views, [""] * views,
                                  guidance_scale, t_range, noise, cameras, opacity=seen.opacity)
            result.loss.backward()
            total += float((x.grad * slope).sum())
        out[scale] = total / (views * draws)
    return out


def crossing(curve: dict[float, float]) -> float | None:
    """Where the projection first turns from growing (negative) to shrinking (positive), linearly between
    the scales around it."""
    points = sorted(curve.items())
    for (s0, p0), (s1, p1) in zip(points, points[1:]):
        if p0 <= 0.0 < p1:
            return s0 + (s1 - s0) * (-p0) / (p1 - p0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="toy-objects", help="toy-objects or a folder of its weights")
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="default: the recommended one (toy-objects' 20)")
    parser.add_argument("--t-range", type=float, nargs=2, default=(0.02, 0.98))
    parser.add_argument("--measure", choices=("size", "saturation"), default="size",
                        help="what SDS's pull is measured on: the object's scale, or its colour's saturation")
    parser.add_argument("--plain-guidance", action="store_true",
                        help="classifier-free guidance of the whole prompt, not the prior's own (toy-objects "
                             "guides its colour word apart)")
    args = parser.parse_args()
    guidance = load_guidance(args.model, torch.device("cpu"))
    if args.plain_guidance:
        guidance.guided_noise = functools.partial(Guidance.guided_noise, guidance)
    scale = args.guidance_scale or float(recommendations("toy-objects")["guidance_scale"])
    values, name = (SCALES, "scale") if args.measure == "size" else (SATURATIONS, "saturation")
    rows = []
    for prompt in args.prompts:
        if args.measure == "saturation" and parse_builtin_prompt("toy-objects", prompt).colour in (None, "white"):
            print(json.dumps({"prompt": prompt, "skipped": "names no colour with a hue"}), flush=True)
            continue
        curve = projections(guidance, prompt, values, args.views, args.draws, scale, tuple(args.t_range),
                            args.measure)
        preferred = crossing(curve)
        row = {"prompt": prompt, f"projection_by_{name}": {str(s): round(p, 3) for s, p in curve.items()},
               f"preferred_{name}": None if preferred is None else round(preferred, 3)}
        if preferred is None:
            row["grows" if curve[max(curve)] <= 0 else "shrinks"] = True
        rows.append(row)
        print(json.dumps(row), flush=True)
    found = [r[f"preferred_{name}"] for r in rows if r[f"preferred_{name}"] is not None]
    print(json.dumps({"model": args.model, "measure": args.measure,
                      "guidance": "plain" if args.plain_guidance else "the prior's",
                      "guidance_scale": scale, "t_range": list(args.t_range),
                      "prompts": len(rows), "crossed": len(found),
                      "grows_past_range": sum(1 for r in rows if r.get("grows")),
                      f"mean_preferred_{name}": round(sum(found) / len(found), 3) if found else None}), flush=True)


if __name__ == "__main__":
    main()
