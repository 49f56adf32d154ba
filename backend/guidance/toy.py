"""The built-in toy priors' guidance: camera-aware pixel guidance plus each prior's vocabulary rules."""

from __future__ import annotations

from ..toy import builtin_neighbours, parse_builtin_prompt
from ..toy.vocab import VocabularyError
from .camera_pixel import CameraAwarePixelGuidance
from .registry import register_prior


class BuiltinToyGuidance(CameraAwarePixelGuidance):
    """A built-in prior: its prompts are read by its own vocabulary (`parse_builtin_prompt`, by prior name)."""

    def check_prompt(self, prompt: str) -> None:
        parse_builtin_prompt(self.prior_name, prompt)  # raises VocabularyError listing the vocabulary

    def condition_prompt(self, prompt: str, shading: str) -> str:
        # The prior reads the canonical form it was trained on ('an Orange cube' -> 'a orange cube').
        # Textureless renders show no colour (nor pattern), so they are scored against the prompt without it.
        parsed = parse_builtin_prompt(self.prior_name, prompt)
        return (parsed.unpainted() if shading == "textureless" else parsed).text()

    def alternatives(self, prompt: str) -> list[str]:
        return builtin_neighbours(self.prior_name, prompt)


@register_prior
class ToyGuidance(BuiltinToyGuidance):
    """The built-in shapes prior (its weights' model_index.json says `"_prior": "toy-shapes"`)."""

    prior_name = "toy-shapes"


__all__ = ["BuiltinToyGuidance", "ToyGuidance", "VocabularyError"]
