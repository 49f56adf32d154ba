"""Training images for the toy-objects prior: `objects.py`'s objects rendered by the backend's own renderer.

As for toy-shapes (`data.py`), cameras, lights, ambient, shading mix and backgrounds are drawn as the SDS
trainer draws them from the prior's recommended JobSpec (only the rays' samples sit at their bins' centres),
so the prior learns the image distribution it will later be asked to score: here 64 px renders on random
background colours (white shows on them, as it never did on the grey backdrop), from cameras that also look
from below part of the time.

Images are made in chunks of `CHUNK` with one seed each and kept as files in a work folder: a session that
ends mid-way resumes at the first missing chunk, and chunks are independent, so processes can make different
chunks side by side. A chunk's file name carries `DATA_VERSION`: bump it when anything that draws the images
changes (objects.py, the constants here, the training scene), so old chunks are not taken for new ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.recommended import TOY_OBJECTS_TRAINING_SCENE

from ..cameras import sample_cameras, view_name
from ..renderer import SHADINGS, render, sample_ambient, sample_backgrounds
from .data import NO_COLOUR
from .object_vocab import ObjectPrompt
from .objects import OBJECTS, PATTERNS, PRIMITIVES, ObjectField
from .vocab import COLOUR_RGB, COLOURS

NAMES = tuple(OBJECTS)
#: Index for "no colour word" / "no pattern word" (textureless renders, the snowman, plain objects).
NONE = NO_COLOUR
RESOLUTION = 64
CHUNK = 1024
#: Part of every chunk's file name (see the module docstring).
DATA_VERSION = 1
#: Renders share one object, colour, pattern and shading; cameras, lights and backgrounds differ.
GROUP = 16
#: Share of colourable renders that wear each pattern (the rest are plain).
PATTERN_SHARE = 0.2
#: Composites have more to learn (parts, fronts) than the primitives.
COMPOSITE_WEIGHT = 1.5


def training_spec(seed: int = 0) -> JobSpec:
    """The JobSpec whose camera, light, shading and background draws make the training images."""
    return JobSpec.from_dict({"prompt": "a cube", "seed": seed, **TOY_OBJECTS_TRAINING_SCENE})


@dataclass
class ObjectImages:
    images: np.ndarray     # (N, 3, R, R) uint8
    objects: np.ndarray    # (N,) index into NAMES
    colours: np.ndarray    # (N,) index into COLOURS, or NONE
    patterns: np.ndarray   # (N,) index into PATTERNS, or NONE
    azimuth: np.ndarray    # (N,) degrees
    elevation: np.ndarray  # (N,) degrees

    def __len__(self) -> int:
        return len(self.objects)

    def prompt(self, i: int, with_colour: bool = True, with_view: bool = True) -> str:
        # The canonical wording ToyObjectsGuidance scores against, so training and SDS prompts cannot drift.
        colour = COLOURS[self.colours[i]] if with_colour and self.colours[i] != NONE else None
        pattern = PATTERNS[self.patterns[i]] if self.patterns[i] != NONE else None
        view = view_name(float(self.azimuth[i]), float(self.elevation[i])) if with_view else None
        return ObjectPrompt(NAMES[self.objects[i]], colour, pattern, view).text()


@torch.no_grad()
def make_chunk(index: int, seed: int = 0, count: int = CHUNK, resolution: int = RESOLUTION) -> ObjectImages:
    """Chunk `index` of the training set made with `seed`: the same arrays every time."""
    spec = training_spec(seed)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    object_p = torch.tensor([COMPOSITE_WEIGHT if name not in PRIMITIVES else 1.0 for name in NAMES])
    shading_p = torch.tensor([spec.shading_probabilities()[s] for s in SHADINGS])
    parts: dict[str, list] = {k: [] for k in ObjectImages.__dataclass_fields__}
    for _ in range(math.ceil(count / GROUP)):
        obj = int(torch.multinomial(object_p, 1, generator=gen))
        colour = int(torch.randint(len(COLOURS), (1,), generator=gen))
        draw = float(torch.rand((), generator=gen))
        pattern = NONE if draw >= PATTERN_SHARE * len(PATTERNS) else int(draw // PATTERN_SHARE)
        shading = SHADINGS[int(torch.multinomial(shading_p, 1, generator=gen))]
        cameras = sample_cameras(spec, GROUP, gen)
        ambient = sample_ambient(spec.ambient, GROUP, gen)
        background = sample_backgrounds(spec.background, GROUP, gen)
        target = OBJECTS[NAMES[obj]]
        if not target.colourable:
            colour, pattern = NONE, NONE
        if colour == COLOURS.index("white"):  # white with white is plain white: no pattern to name
            pattern = NONE
        # The colour a non-colourable object's main part would take is never seen (it has no main part).
        rgb = COLOUR_RGB[COLOURS[colour]] if colour != NONE else (0.8, 0.8, 0.8)
        field = ObjectField(NAMES[obj], rgb, PATTERNS[pattern] if pattern != NONE else None)
        # Samples at the bins' centres (generator None): jittered samples speckle these crisp walls at 64 px
        # (docs/toy-prior.md), and the prior would learn the speckle as part of every object.
        out = render(field, cameras, resolution, shading=shading, ambient=ambient, background=background,
                     generator=None, with_orientation=False)
        if shading == "textureless":  # shows neither colour nor pattern: its prompt names neither
            colour, pattern = NONE, NONE
        parts["images"].append((out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        for key, value in (("objects", obj), ("colours", colour), ("patterns", pattern)):
            parts[key].append(np.full(GROUP, value, dtype=np.int16))
        parts["azimuth"].append(cameras.azimuth.numpy().astype(np.float32))
        parts["elevation"].append(cameras.elevation.numpy().astype(np.float32))
    return ObjectImages(**{k: np.concatenate(v)[:count] for k, v in parts.items()})


def chunk_path(folder: Path, index: int, seed: int, count: int = CHUNK, resolution: int = RESOLUTION) -> Path:
    size = "" if count == CHUNK else f"-{count}"
    return folder / f"objects-v{DATA_VERSION}-{resolution}px-seed{seed}-chunk{index:04d}{size}.npz"


def load_or_make(folder: Path, count: int, seed: int = 0, progress=None,
                 resolution: int = RESOLUTION) -> ObjectImages:
    """`count` >= 1 images in chunks of `CHUNK` (the last one smaller), made where missing (and kept in
    `folder`) and loaded where present."""
    if count < 1:
        raise ValueError(f"count = {count}: at least one image")
    folder.mkdir(parents=True, exist_ok=True)
    loaded = []
    sizes = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    for index, size in enumerate(sizes):
        path = chunk_path(folder, index, seed, size, resolution)
        if not path.is_file():
            chunk = make_chunk(index, seed, size, resolution)
            partial = path.with_suffix(f".{os.getpid()}.partial.npz")
            np.savez(partial, **chunk.__dict__)
            partial.replace(path)  # whole chunks only: a session killed mid-write leaves no half file behind
        with np.load(path) as arrays:
            loaded.append({k: arrays[k] for k in arrays.files})
        if progress is not None:
            progress(index + 1, len(sizes))
    return ObjectImages(**{k: np.concatenate([c[k] for c in loaded]) for k in loaded[0]})

