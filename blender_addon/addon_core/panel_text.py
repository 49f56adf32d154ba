"""Small decisions the sidebar makes, kept out of `bpy` so they are tested without Blender: which job the progress
box follows, and how a long status line wraps."""

from __future__ import annotations

import textwrap
from typing import Sequence

from ..shared.states import ACTIVE, RUNNING

#: Roughly how wide one character of Blender's UI font is at a UI scale of 1 (pixels): wide enough that a wrapped
#: line is never cut off with an ellipsis.
CHAR_WIDTH_PX = 7.0


def progress_job_index(states: Sequence[str], selected: int) -> int:
    """Index of the job the progress box shows (-1: none): the one selected in the list, else the newest running
    one, else the newest queued one, else the newest. Following the newest job instead would hide a running
    job's ETA as soon as a second job is queued (or cancelled)."""
    if 0 <= selected < len(states):
        return selected
    for wanted in (RUNNING, *(s for s in ACTIVE if s != RUNNING)):
        for index in range(len(states) - 1, -1, -1):
            if states[index] == wanted:
                return index
    return len(states) - 1


def wrap(text: str, width_px: float, scale: float = 1.0, indent_px: float = 40.0) -> list[str]:
    """`text` as lines that fit a sidebar `width_px` wide (at UI `scale`), so a long status or error is read
    whole rather than cut off with "…". At least one line; at least 12 characters a line."""
    chars = max(12, int((width_px - indent_px) / (CHAR_WIDTH_PX * max(scale, 0.1))))
    return textwrap.wrap(" ".join(text.split()), chars) or [""]
