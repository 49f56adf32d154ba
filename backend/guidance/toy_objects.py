"""The built-in `toy-objects` prior and its view-text reading: one set of weights, two conditionings.

The weights were trained with the camera's features present most of the time and zeroed the rest (every
prompt naming its view as often either way: "a red mug, side view"), so one model answers both ways:

- `toy-objects` (the default reading) sees the camera, as Zero123 and MVDream do: the prior is told where
  every render looks from, so it has no reason to draw a front on the back;
- `toy-objects-view-text` never sees it and knows the view only from the prompt's view suffix, exactly as
  Stable Diffusion is prompted. It is the instrument for the multi-face ("Janus") problem: with it, a toy
  object with a front can grow a second one, and Perp-Neg can be measured against that.

Both readings guide SDS with the colour word split off (`guided_noise`, and `perp_neg_noise` with Perp-Neg):
the object everywhere, the colour word only on the pixels the object covers wholly, both at the recipe's
guidance scale. Guided at 20 over the whole image, the colour word asks for its colour beyond the object's
edge (the prior tints the background with it), and SDS grows the object to paint there: a red cube came out
twice its size. Guided at a lower scale (3) everywhere, the object term's colour, averaged over the palette,
won and SDS greyed the colours. bench/toy_size_preference.py measures both pulls in minutes (`--measure size`,
`--measure saturation`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from ..toy import parse_builtin_prompt
from ..toy.object_vocab import colours_with
from .camera_pixel import feature_size
from .perp_neg import perp_neg_guidance
from .registry import register_prior
from .toy import BuiltinToyGuidance


#: A pixel is the object's inside when the render covers it at least this much, and so do its 8 neighbours:
#: an edge pixel, partly background, would ask the object to grow to take the colour there.
INSIDE_OPACITY = 0.98


@register_prior
class ToyObjectsGuidance(BuiltinToyGuidance):
    prior_name = "toy-objects"

    def guided_noise(self, x_t, t, uncond, prompts, guidance_scale, cameras, generator, opacity=None):
        """eps_u + scale (eps_other - eps_u) + scale inside (eps_named - eps_other), where `other` is the prompt
        with a colour drawn at random from the palette in place of the named one and `inside` the pixels the
        object covers wholly (`inside`; without an `opacity`, plain guidance). Outside that is the
        object (shape, parts, pattern, view) guided with its colour averaged out over the draws; inside, plain
        guidance of the whole prompt. One UNet pass more than plain guidance (one drawn prompt per view);
        prompts naming no colour (the snowman; textureless renders) are guided plainly."""
        if opacity is None:  # nothing to tell inside from outside: plain guidance, without the extra pass
            return super().guided_noise(x_t, t, uncond, prompts, guidance_scale, cameras, generator)
        others = [self._any_colour(prompt, generator) for prompt in prompts]
        if others == prompts:
            return super().guided_noise(x_t, t, uncond, prompts, guidance_scale, cameras, generator)
        eps_uncond, eps_other, eps_named = self.noise_per_text(
            x_t, t, [uncond, self.embed_text(others), self.embed_text(prompts)], cameras)
        return (eps_uncond + guidance_scale * (eps_other - eps_uncond)
                + guidance_scale * inside(opacity, eps_named) * (eps_named - eps_other))

    def perp_neg_noise(self, x_t, t, uncond, scale, cameras, perp_neg, generator, opacity=None):
        """Perp-Neg with the colour word split off as in `guided_noise`: Perp-Neg's eps_hat of the view prompts
        with a drawn palette colour (one draw a step, the same for every view, so a camera's blend and its
        negatives name one colour), plus scale inside (eps_named - eps_other) of the blended positives."""
        named = perp_neg.view_prompts
        other = None if opacity is None else self._any_colour(next(iter(named.values())), generator)
        # Plain Perp-Neg without an opacity, when no colour is named (textureless, the snowman) or the draw hit it.
        if other is None or other in named.values():
            return super().perp_neg_noise(x_t, t, uncond, scale, cameras, perp_neg, generator)
        colour = parse_builtin_prompt(self.prior_name, other).colour
        others = {view: self._with_colour(prompt, colour) for view, prompt in named.items()}
        eps_uncond, (eps_other, eps_named), eps_negatives, weights = self.perp_neg_terms(
            x_t, t, uncond, cameras, perp_neg.strength, [others, named])
        return (perp_neg_guidance(eps_uncond, eps_other, eps_negatives, weights, scale)
                + scale * inside(opacity, eps_named) * (eps_named - eps_other))

    def _with_colour(self, prompt: str, colour: str) -> str:
        return dataclasses.replace(parse_builtin_prompt(self.prior_name, prompt), colour=colour).text()

    def _any_colour(self, prompt: str, generator: torch.Generator) -> str:
        """`prompt` with a colour it may name (`colours_with` its pattern) drawn in place of its own."""
        asked = parse_builtin_prompt(self.prior_name, prompt)
        if asked.colour is None:
            return prompt
        choices = colours_with(asked.pattern)
        drawn = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        return dataclasses.replace(asked, colour=drawn).text()


def inside(opacity: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 1 on the pixels the object covers wholly (INSIDE_OPACITY, with its 8 neighbours), else 0, at
    the resolution of `like`; all ones without an opacity."""
    if opacity is None:
        return torch.ones_like(like[:, :1])
    if opacity.shape[-2:] != like.shape[-2:]:
        opacity = F.interpolate(opacity.float(), size=like.shape[-2:], mode="bilinear", align_corners=False)
    covered = (opacity.to(like.device) >= INSIDE_OPACITY).to(like.dtype)
    return -F.max_pool2d(-covered, 3, stride=1, padding=1)  # eroded by a pixel: an edge pixel's neighbour is out


@register_prior
class ToyObjectsViewTextGuidance(ToyObjectsGuidance):
    prior_name = "toy-objects-view-text"

    def predict_noise(self, x_t, t, text, cameras):
        # The features of "no camera", as the training's camera dropout showed them: zeros.
        blank = torch.zeros(x_t.shape[0], feature_size(self.conditioning), device=x_t.device, dtype=self.dtype)
        return self.run_unet(x_t, t, text, blank)
