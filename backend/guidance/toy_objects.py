"""The built-in `toy-objects` prior and its view-text reading: one set of weights, two conditionings.

The weights were trained with the camera's features present most of the time and zeroed the rest (every
prompt naming its view as often either way: "a red mug, side view"), so one model answers both ways:

- `toy-objects` (the default reading) sees the camera, as Zero123 and MVDream do: the prior is told where
  every render looks from, so it has no reason to draw a front on the back;
- `toy-objects-view-text` never sees it and knows the view only from the prompt's view suffix, exactly as
  Stable Diffusion is prompted. It is the instrument for the multi-face ("Janus") problem: with it, a toy
  object with a front can grow a second one, and Perp-Neg can be measured against that.

Both readings guide SDS with the colour word split off (`guided_noise`, and `perp_neg_noise` with Perp-Neg):
the object at the recipe's guidance scale, the colour at `COLOUR_GUIDANCE`. Guided at 20 as a whole, the
colour word asks for its colour beyond the object's edge (the prior tints the background with it), and SDS
grows the object to paint there: a red cube came out twice its size. bench/toy_size_preference.py measures
that pull in minutes.
"""

from __future__ import annotations

import dataclasses

import torch

from ..toy import parse_builtin_prompt
from ..toy.object_vocab import colours_with
from .camera_pixel import feature_size
from .perp_neg import perp_neg_guidance
from .registry import register_prior
from .toy import BuiltinToyGuidance


#: How strongly SDS is guided toward the named colour rather than another one. At 3 (with 20 for the rest) a
#: true-size red cube is where the prior's pull on its size turns from growing to shrinking (0.98 of its size;
#: 1.18 at 7.5, beyond 1.3 with the colour guided at 20), and SDS still paints the cube red (3.8 degrees off).
COLOUR_GUIDANCE = 3.0


@register_prior
class ToyObjectsGuidance(BuiltinToyGuidance):
    prior_name = "toy-objects"

    def guided_noise(self, x_t, t, uncond, prompts, guidance_scale, cameras, generator):
        """eps_u + scale (eps_other - eps_u) + COLOUR_GUIDANCE (eps_named - eps_other), where `other` is the prompt
        with a colour drawn at random from the palette in place of the named one. In expectation over the draw
        that is the object (shape, parts, pattern, view) guided at `scale` with its colour averaged out, and the
        named colour over that average at COLOUR_GUIDANCE, for one UNet pass more than plain guidance (one drawn
        prompt per view). Prompts without a colour (the snowman; textureless renders) are guided plainly."""
        others = [self._any_colour(prompt, generator) for prompt in prompts]
        if others == prompts:
            return super().guided_noise(x_t, t, uncond, prompts, guidance_scale, cameras, generator)
        eps_uncond, eps_other, eps_named = self.noise_per_text(
            x_t, t, [uncond, self.embed_text(others), self.embed_text(prompts)], cameras)
        return eps_uncond + guidance_scale * (eps_other - eps_uncond) + COLOUR_GUIDANCE * (eps_named - eps_other)

    def perp_neg_noise(self, x_t, t, uncond, scale, cameras, perp_neg, generator):
        """Perp-Neg with the colour word split off as in `guided_noise`: Perp-Neg's eps_hat of the view prompts
        with a drawn palette colour (one draw a step, the same for every view, so a camera's blend and its
        negatives name one colour), plus COLOUR_GUIDANCE (eps_named - eps_other) of the blended positives.
        Perp-Neg on the prompts as they are would guide the colour word whole at 20, and grow the object."""
        named = perp_neg.view_prompts
        other = self._any_colour(next(iter(named.values())), generator)
        if other in named.values():  # no colour named (textureless, the snowman), or the draw hit it: plain
            return super().perp_neg_noise(x_t, t, uncond, scale, cameras, perp_neg, generator)
        colour = parse_builtin_prompt(self.prior_name, other).colour
        others = {view: self._with_colour(prompt, colour) for view, prompt in named.items()}
        eps_uncond, (eps_other, eps_named), eps_negatives, weights = self.perp_neg_terms(
            x_t, t, uncond, cameras, perp_neg.strength, [others, named])
        return (perp_neg_guidance(eps_uncond, eps_other, eps_negatives, weights, scale)
                + COLOUR_GUIDANCE * (eps_named - eps_other))

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


@register_prior
class ToyObjectsViewTextGuidance(ToyObjectsGuidance):
    prior_name = "toy-objects-view-text"

    def predict_noise(self, x_t, t, text, cameras):
        # The features of "no camera", as the training's camera dropout showed them: zeros.
        blank = torch.zeros(x_t.shape[0], feature_size(self.conditioning), device=x_t.device, dtype=self.dtype)
        return self.run_unet(x_t, t, text, blank)
