"""What the toy prior understands: '{article} {colour} {shape}' or '{article} {shape}', plus the backend's view suffixes.

The article may be a, an, the or none, in any case and with any spacing;
prompts reach the prior in one canonical form ('a orange sphere'), the one it was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHAPES = ("cube", "sphere", "torus", "cone", "cylinder")
COLOURS = ("red", "green", "blue", "yellow", "white", "orange", "purple")
VIEWS = ("front", "side", "back", "overhead")
#: sRGB albedo of each colour word, as the training renders paint them.
COLOUR_RGB = {
    "red": (0.85, 0.10, 0.10), "green": (0.10, 0.70, 0.15), "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10), "white": (0.92, 0.92, 0.92), "orange": (0.95, 0.50, 0.05),
    "purple": (0.55, 0.15, 0.75),
}
WORDS = ("a", *SHAPES, *COLOURS, *VIEWS, "view")

ARTICLES = ("a", "an", "the")
_PROMPT = re.compile(r"^\s*(?:(?:a|an|the)\s+)?(?:(?P<colour>[a-z]+)\s+)?(?P<shape>[a-z]+)\s*"
                     r"(?:,\s*(?P<view>[a-z]+)\s+view\s*)?$")


class VocabularyError(ValueError):
    pass


@dataclass(frozen=True)
class ToyPrompt:
    shape: str | None
    colour: str | None
    view: str | None

    def unpainted(self) -> "ToyPrompt":
        """Without its colour: what a textureless render shows."""
        return ToyPrompt(self.shape, None, self.view)

    def text(self) -> str:
        """Back to words; empty for the unconditional prompt."""
        if self.shape is None:
            return ""
        words = "a " + (f"{self.colour} " if self.colour else "") + self.shape
        return words + (f", {self.view} view" if self.view else "")


def vocabulary_message() -> str:
    return (f"the toy-shapes prior knows prompts 'a {{colour}} {{shape}}' or 'a {{shape}}' (article a, an, the "
            f"or none) with shapes {', '.join(SHAPES)} and colours {', '.join(COLOURS)}")


def parse_prompt(prompt: str) -> ToyPrompt:
    """'An  Orange Cube, front view' -> ToyPrompt('cube', 'orange', 'front'); '' -> unconditional."""
    if not prompt.strip():
        return ToyPrompt(None, None, None)
    match = _PROMPT.match(prompt.lower())
    if not match or match["shape"] not in SHAPES or (match["colour"] and match["colour"] not in COLOURS) \
            or (match["view"] and match["view"] not in VIEWS):
        raise VocabularyError(f"prompt {prompt!r} is outside the vocabulary: {vocabulary_message()}")
    return ToyPrompt(match["shape"], match["colour"], match["view"])


def neighbours(prompt: ToyPrompt) -> list[ToyPrompt]:
    """What a result of `prompt` could be mistaken for: its shape in the other colours, the other shapes in its
    colour (uncoloured: the other shapes). The judge of best of N weighs the prompt against them."""
    if prompt.shape is None:
        return []
    recoloured = [ToyPrompt(prompt.shape, c, prompt.view) for c in COLOURS if prompt.colour and c != prompt.colour]
    return recoloured + [ToyPrompt(s, prompt.colour, prompt.view) for s in SHAPES if s != prompt.shape]


#: What `parse_builtin_prompt` calls.
parse = parse_prompt
