"""The built-in `toy-objects` prior and its view-text reading: one set of weights, two conditionings.

The weights were trained with the camera's features present most of the time and zeroed the rest (every
prompt naming its view as often either way: "a red mug, side view"), so one model answers both ways:

- `toy-objects` (the default reading) sees the camera, as Zero123 and MVDream do: the prior is told where
  every render looks from, so it has no reason to draw a front on the back;
- `toy-objects-view-text` never sees it and knows the view only from the prompt's view suffix, exactly as
  Stable Diffusion is prompted. It is the instrument for the multi-face ("Janus") problem: with it, a toy
  object with a front can grow a second one, and Perp-Neg can be measured against that.
"""

from __future__ import annotations

import torch

from .camera_pixel import feature_size
from .registry import register_prior
from .toy import BuiltinToyGuidance


@register_prior
class ToyObjectsGuidance(BuiltinToyGuidance):
    prior_name = "toy-objects"


@register_prior
class ToyObjectsViewTextGuidance(ToyObjectsGuidance):
    prior_name = "toy-objects-view-text"

    def predict_noise(self, x_t, t, text, cameras):
        # The features of "no camera", as the training's camera dropout showed them: zeros.
        blank = torch.zeros(x_t.shape[0], feature_size(self.conditioning), device=x_t.device, dtype=self.dtype)
        return self.run_unet(x_t, t, text, blank)
