"""The built-in `toy-shapes` prior: camera-aware pixel guidance plus its vocabulary rules."""

from __future__ import annotations

from ..toy.vocab import ToyPrompt, VocabularyError, parse_prompt
from .camera_pixel import CameraAwarePixelGuidance


class ToyGuidance(CameraAwarePixelGuidance):
    kind = "toy-shapes"

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)  # raises VocabularyError listing the vocabulary

    def condition_prompt(self, prompt: str, shading: str) -> str:
        # Textureless renders show no colour, so they are scored against the colourless prompt.
        if shading != "textureless":
            return prompt
        parsed = parse_prompt(prompt)
        return ToyPrompt(parsed.shape, None, parsed.view).text()


__all__ = ["ToyGuidance", "VocabularyError"]
