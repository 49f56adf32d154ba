"""What each built-in toy prior is trained from: its words, data, model size and sample grid, one recipe each.

`train.py` runs any recipe; a new toy prior is a new entry here (and its data module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from blender_dreamfusion.shared.recommended import BUILTIN_RECOMMENDATIONS

from ..cameras import view_name
from . import BUILTIN_WEIGHTS
from .vocab import COLOURS


@dataclass(frozen=True)
class Recipe:
    name: str
    #: Every word its tokenizer knows, in a fixed order.
    words: tuple[str, ...]
    #: Pixels per UNet position along each side (guidance/pixel.py's `patch_size`).
    patch: int
    channels: tuple[int, int, int]
    #: Share of training images whose camera features are zeroed: the prior also learns to work without
    #: them (classifier-free guidance's dropout, and toy-objects' view-text reading).
    camera_dropout: float
    #: Training images by default.
    images: int
    #: (prompt, azimuth, elevation) of every tile of the sample grid, row by row, and the grid's columns.
    grid: Callable[[], list[tuple[str, float, float]]]
    columns: int
    #: (count, seed, work folder, progress, resolution) -> the training images: an object with `images`
    #: (N, 3, R, R) uint8, `colours` (N,) (data.NO_COLOUR: none), `azimuth`, `elevation` and
    #: `prompt(i, with_colour, with_view)`.
    make_data: Callable[..., Any]
    #: What the UNet predicts: "epsilon" (the noise) or "v_prediction" (v = sqrt(ab) eps - sqrt(1 - ab) x0,
    #: Salimans & Ho 2022; the guidance converts it to the noise). A noise-predicting UNet has to give its
    #: answer at high noise to a precision of sqrt(ab), and the noise loss hardly counts it there, which is
    #: where only the prompt can tell an object's colour: toy-objects' first training (epsilon) learnt its
    #: shapes but barely its colours (bench/toy_colour_binding.py).
    prediction: str = "epsilon"

    @property
    def recommended_spec(self) -> dict:
        return BUILTIN_RECOMMENDATIONS[self.name]

    @property
    def resolution(self) -> int:
        """The prior sees what SDS renders: its recommended render resolution."""
        return int(self.recommended_spec["render_resolution"])

    @property
    def weights(self) -> Path:
        return BUILTIN_WEIGHTS[self.name]


#: Columns of the sample grids (azimuth, elevation): front / front at 45 degrees (a cube's corner) / side / back /
#: overhead; each tile's prompt names its view as SDS would (`view_name`).
VIEWS = ((0.0, 10.0), (45.0, 20.0), (90.0, 10.0), (180.0, 10.0), (30.0, 70.0))


def _shapes_grid() -> list[tuple[str, float, float]]:
    from .vocab import SHAPES

    return [(f"a {COLOURS[row % len(COLOURS)]} {shape}, {view_name(az, el)} view", az, el)
            for row, shape in enumerate(SHAPES) for az, el in VIEWS]


def _objects_grid() -> list[tuple[str, float, float]]:
    from .object_vocab import ObjectPrompt
    from .objects import OBJECTS, PATTERNS

    rows = []
    for row, (name, target) in enumerate(OBJECTS.items()):
        colour = COLOURS[row % len(COLOURS)] if target.colourable else None
        pattern = PATTERNS[(row // 4) % 2] if colour not in (None, "white") and row % 4 == 1 else None
        rows += [(ObjectPrompt(name, colour, pattern, view_name(az, el)).text(), az, el) for az, el in VIEWS]
    return rows


def _shapes_data(count: int, seed: int, work: Path, progress, resolution: int):
    from .data import make_images

    # The cube is the one shape whose look depends on the azimuth, so it needs more examples than the others.
    return make_images(count, resolution=resolution, seed=seed, batch=32, shape_weights={"cube": 2.0})


def _objects_data(count: int, seed: int, work: Path, progress, resolution: int):
    from .object_data import load_or_make

    return load_or_make(work / "data", count, seed, progress, resolution)


def _words(module: str) -> tuple[str, ...]:
    import importlib

    return importlib.import_module(f"{__package__}.{module}").WORDS


RECIPES: dict[str, Recipe] = {
    "toy-shapes": Recipe("toy-shapes", _words("vocab"), 1, (32, 64, 64), 0.05, 40_000, _shapes_grid, len(VIEWS),
                         _shapes_data),
    "toy-objects": Recipe("toy-objects", _words("object_vocab"), 2, (48, 96, 96), 0.3, 49_152, _objects_grid,
                          len(VIEWS), _objects_data,
                          prediction="v_prediction"),
}
