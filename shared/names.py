"""File names from prompts, for every edge that writes results (the backend CLI, the batch command)."""

from __future__ import annotations

import re
import unicodedata


def slugify(prompt: str, separator: str = "-", empty: str = "prompt", max_len: int = 60) -> str:
    """A file-name-safe form of a prompt: 'A red cube, front!' -> 'a-red-cube-front'; accents become
    their base letters ('Über' -> 'uber'); `empty` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", separator, ascii_text.lower()).strip(separator)[:max_len].rstrip(separator)
    return slug or empty
