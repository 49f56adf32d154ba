"""The built-in `toy-shapes` prior: camera-aware pixel guidance plus its vocabulary rules."""

from __future__ import annotations

from ..toy.vocab import ToyPrompt, VocabularyError, parse_prompt
from .camera_pixel import CameraAwarePixelGuidance
from .registry import register_prior


@register_prior
class ToyGuidance(CameraAwarePixelGuidance):
    """The built-in prior (its weights' model_index.json says `"_prior": "toy-shapes"`)."""

    prior_name = "toy-shapes"

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)  # raises VocabularyError listing the vocabulary

    def condition_prompt(self, prompt: str, shading: str) -> str:
        # The prior reads the canonical form it was trained on ('an Orange cube' -> 'a orange cube').
        # Textureless renders show no colour, so they are scored against the colourless prompt.
        parsed = parse_prompt(prompt)
        if shading == "textureless":
            parsed = ToyPrompt(parsed.shape, None, parsed.view)
        return parsed.text()


__all__ = ["ToyGuidance", "VocabularyError"]
