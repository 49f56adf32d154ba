"""What the toy-objects prior understands: '{article} {colour} {pattern} {object}', each word but the object
optional, plus the backend's view suffixes (', front view'), as Stable Diffusion is prompted.

'a red mug', 'a striped sphere', 'the snowman', 'A Blue Checkered Chair, side view'. A pattern alternates the
colour (or, without one, whichever colour the prior picks) with white. The snowman takes no colour or pattern:
it is white with an orange nose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .objects import OBJECTS, PATTERNS
from .vocab import COLOURS, VIEWS, VocabularyError

ARTICLES = ("a", "an", "the")
#: Every word the prior's tokenizer needs, in a fixed order (a tokenizer built from it is the same every time).
WORDS = ("a", *OBJECTS, *COLOURS, *PATTERNS, *VIEWS, "view")

_PROMPT = re.compile(r"^\s*(?:(?:a|an|the)\s+)?(?P<words>[a-z]+(?:\s+[a-z]+)*?)\s*"
                     r"(?:,\s*(?P<view>[a-z]+)\s+view\s*)?$")


@dataclass(frozen=True)
class ObjectPrompt:
    object: str | None
    colour: str | None = None
    pattern: str | None = None
    view: str | None = None

    def unpainted(self) -> "ObjectPrompt":
        """Without its colour and pattern: what a textureless render shows."""
        return ObjectPrompt(self.object, None, None, self.view)

    def text(self) -> str:
        """Back to the one canonical form the prior is trained on; empty for the unconditional prompt."""
        if self.object is None:
            return ""
        words = " ".join(w for w in ("a", self.colour, self.pattern, self.object) if w)
        return words + (f", {self.view} view" if self.view else "")


def colours_with(pattern: str | None) -> tuple[str, ...]:
    """The colours a prompt may name beside `pattern`: a pattern alternates its colour with white, so white has
    none."""
    return tuple(c for c in COLOURS if not (pattern and c == "white"))


def vocabulary_message() -> str:
    colourable = [name for name, o in OBJECTS.items() if o.colourable]
    fixed = [name for name, o in OBJECTS.items() if not o.colourable]
    return (f"the toy-objects prior knows prompts 'a {{colour}} {{pattern}} {{object}}' (article a, an, the or "
            f"none; colour and pattern optional) with objects {', '.join(colourable)}, colours "
            f"{', '.join(COLOURS)} and patterns {', '.join(PATTERNS)} (a colour with white, so not on white); "
            f"and {', '.join(fixed)} as they are "
            "(no colour or pattern)")


def parse_object_prompt(prompt: str) -> ObjectPrompt:
    """'A Blue Checkered Chair, side view' -> ObjectPrompt('chair', 'blue', 'checkered', 'side'); '' ->
    unconditional. VocabularyError, listing what is known, for anything else."""
    if not prompt.strip():
        return ObjectPrompt(None)
    match = _PROMPT.match(prompt.lower())
    words = match["words"].split() if match else []
    if not words or words[-1] not in OBJECTS or (match["view"] and match["view"] not in VIEWS):
        raise VocabularyError(f"prompt {prompt!r} is outside the vocabulary: {vocabulary_message()}")
    name, modifiers = words[-1], words[:-1]
    colour = modifiers.pop(0) if modifiers and modifiers[0] in COLOURS else None
    pattern = modifiers.pop(0) if modifiers and modifiers[0] in PATTERNS else None
    if modifiers:
        raise VocabularyError(f"prompt {prompt!r} is outside the vocabulary (at {modifiers[0]!r}): "
                              f"{vocabulary_message()}")
    if (colour or pattern) and not OBJECTS[name].colourable:
        raise VocabularyError(f"prompt {prompt!r}: the {name} has its own colours (no colour or pattern); "
                              f"{vocabulary_message()}")
    if colour and colour not in colours_with(pattern):
        raise VocabularyError(f"prompt {prompt!r}: a pattern alternates a colour with white, so white has none; "
                              f"{vocabulary_message()}")
    return ObjectPrompt(name, colour, pattern, match["view"])


def neighbours(prompt: ObjectPrompt) -> list[ObjectPrompt]:
    """What a result of `prompt` could be mistaken for (the judge of best of N weighs the prompt against them):
    its object with another colour or pattern where the prompt names one, and the other objects as it is
    painted (those with colours of their own, as they are)."""
    name = prompt.object
    if name is None:
        return []
    out = []
    if prompt.colour:  # another colour, the same pattern (or none)
        out += [ObjectPrompt(name, c, prompt.pattern, prompt.view) for c in colours_with(prompt.pattern)
                if c != prompt.colour]
    if prompt.colour or prompt.pattern:  # another pattern (or none), the same colour
        out += [ObjectPrompt(name, prompt.colour, p, prompt.view) for p in (None, *PATTERNS)
                if p != prompt.pattern and prompt.colour in colours_with(p) and (p or prompt.colour)]
    for other, kind in OBJECTS.items():
        if other != name:
            painted = kind.colourable
            out.append(ObjectPrompt(other, prompt.colour if painted else None, prompt.pattern if painted else None,
                                    prompt.view))
    return out


#: What `parse_builtin_prompt` calls.
parse = parse_object_prompt
