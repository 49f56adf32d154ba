"""Did SDS make the named object, at the right size, without drips, in the right colour, facing the front?

Scores a result mesh against the declarations of `objects.py` at their true size and place (no normalising:
an object 20 % too large is 20 % too large here). Rotations about Z are searched (the priors fix up, and for
an object without a front nothing fixes its yaw); for an object with a front, where the best rotation puts
it is the front's error, and a result nearer the object's two-faced variant than the object has two fronts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.spatial import cKDTree

from blender_dreamfusion.shared import MeshData

from .objects import MAIN, OBJECTS, PATTERNS, pattern_mask, surface_points
from .quality import WHITE_MAX_SATURATION, WHITE_MIN_LIGHTNESS, colour_hue_error

POINTS = 2000
#: Yaw search: coarse over the circle, then fine around the best.
COARSE_STEP, FINE_STEP = 15.0, 2.5
#: Percentiles that bound a result's extent (single floaters do not decide its size or drip).
LOW, HIGH = 0.5, 99.5
#: Degrees between the turns tried to find a pattern's cells.
PATTERN_STEP = 7.5
#: Metres within which a result's surface counts as showing a front feature, and the share of a feature's
#: expected evidence above which it is present.
FEATURE_TOLERANCE, FEATURE_PRESENT = 0.03, 0.5
#: Fewer of the result's sampled points than this near a feature: no surface there to judge.
MIN_FEATURE_POINTS = 5


@dataclass(frozen=True)
class ObjectScore:
    #: Nearest object by Chamfer distance at true size and place, and every object's distance (metres).
    nearest: str
    distances: dict[str, float]
    #: Mean relative error of the height and the width (0.2: 20 % off).
    size_error: float
    #: How far below the true bottom the mesh reaches, as a share of the true height.
    drip: float
    #: Degrees between the main part's mean hue and the colour word's (white: 0 when white; a tint of grey: at
    #: least 45, quality.colour_hue_error); where it shows a pattern, its coloured cells'. None: not asked.
    colour_error: float | None
    #: The pattern the main part shows best: None (plain), or one of objects.PATTERNS.
    pattern: str | None
    #: Objects with a front: degrees between where the result's front points and -Y, and whether it has two.
    front_error: float | None
    two_fronts: bool | None

    def right(self, name: str, colour: str | None = None, pattern: str | None = None,
              max_hue_error: float = 30.0) -> bool:
        """The named object, in the named colour (if any), with the named pattern (or none)."""
        colour_ok = colour is None or (self.colour_error is not None and self.colour_error <= max_hue_error)
        return self.nearest == name and colour_ok and self.pattern == pattern


def score(mesh: MeshData, name: str, colour: str | None = None) -> ObjectScore:
    """`mesh` (Blender's frame, metres) against the object `name` asked for in `colour` (a colour word)."""
    target = OBJECTS[name]
    if mesh.vertex_count == 0:
        raise ValueError("an empty mesh has nothing to score")
    sample = _sample(mesh.vertex_count)
    points = mesh.positions[sample].astype(np.float64)
    colours = mesh.colors[sample, :3].astype(np.float64) / 255.0
    fits = {other: _best_yaw(points, _reference(other)) for other in OBJECTS}
    distances = {other: round(fit[0], 4) for other, fit in fits.items()}
    yaw = fits[name][1]
    aligned = points @ _rotation(yaw).T
    main = _main_part(aligned, name)
    front_error = two_fronts = None
    if target.has_front:
        front, back = (_feature_evidence(aligned, colours, name, janus) for janus in (False, True))
        if back > front:  # the best fit of the shape put the front features behind: the result faces +Y
            yaw += 180.0
        front_error = round(abs((yaw + 180.0) % 360.0 - 180.0), 1)
        two_fronts = min(front, back) >= FEATURE_PRESENT
    pattern = _pattern(aligned[main], colours[main])
    return ObjectScore(
        nearest=min(distances, key=distances.get), distances=distances,
        size_error=round(_size_error(points, name), 4), drip=round(_drip(points, name), 4),
        colour_error=_colour_error(colours[main], colour, pattern) if colour and main.any() else None,
        pattern=pattern, front_error=front_error, two_fronts=two_fronts)


# --- geometry ------------------------------------------------------------------------------------------------------

def _sample(count: int, keep: int = POINTS) -> np.ndarray:
    """Indices of at most `keep` of `count` vertices, the same every time."""
    if count <= keep:
        return np.arange(count)
    return np.random.default_rng(0).choice(count, keep, replace=False)


@lru_cache(maxsize=None)
def _reference(name: str, janus: bool = False) -> np.ndarray:
    points = surface_points(name, janus).numpy().astype(np.float64)
    return points[_sample(len(points))]


def _rotation(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _chamfer(a: np.ndarray, b: np.ndarray, tree_b: cKDTree) -> float:
    return float(tree_b.query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2.0


def _best_yaw(points: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(smallest Chamfer distance, the yaw in degrees that turns `points` onto `reference`)."""
    tree = cKDTree(reference)
    best = min((_chamfer(points @ _rotation(a).T, reference, tree), a) for a in np.arange(0.0, 360.0, COARSE_STEP))
    fine = np.arange(best[1] - COARSE_STEP, best[1] + COARSE_STEP + 1e-9, FINE_STEP)
    return min((_chamfer(points @ _rotation(a).T, reference, tree), float(a % 360.0)) for a in fine)


def _height_width(points: np.ndarray) -> tuple[float, float]:
    z = points[:, 2]
    radius = np.hypot(points[:, 0], points[:, 1])
    return float(np.percentile(z, HIGH) - np.percentile(z, LOW)), float(2.0 * np.percentile(radius, HIGH))


def _size_error(points: np.ndarray, name: str) -> float:
    height, width = _height_width(points)
    true_height, true_width = _height_width(_reference(name))
    return (abs(height / true_height - 1.0) + abs(width / true_width - 1.0)) / 2.0


def _drip(points: np.ndarray, name: str) -> float:
    target = OBJECTS[name]
    return max(0.0, target.bottom - float(np.percentile(points[:, 2], LOW))) / target.height


# --- fronts ---------------------------------------------------------------------------------------------------------

def _feature_evidence(aligned: np.ndarray, colours: np.ndarray, name: str, mirrored: bool) -> float:
    """How surely the result shows the object's front features where they are (or, `mirrored`, where a second
    front would put them): for each feature, the share of the result's surface near it that is the feature's,
    by its shape (off the body) or by its own paint (a door, a nose: colour nearer its paint than the body's);
    the least over the features, 0 where the result has next to no surface there."""
    target = OBJECTS[name]
    where = torch.from_numpy(aligned).float()
    body = target.body_distance(where).numpy()
    body_colour = _body_colour(colours, body)
    shares = []
    for index, front_name in enumerate(target.front_parts):
        feature = target.janus_parts[index] if mirrored else target.part(front_name)
        near = feature.sdf(where).numpy() < FEATURE_TOLERANCE
        if near.sum() < MIN_FEATURE_POINTS:
            return 0.0
        evidence = near & (body > FEATURE_TOLERANCE)
        if feature.paint != MAIN:
            own = np.linalg.norm(colours - np.asarray(feature.paint), axis=1)
            evidence |= near & (own < np.linalg.norm(colours - body_colour, axis=1))
        shares.append(float(evidence.sum()) / float(near.sum()))
    return min(shares)


def _body_colour(colours: np.ndarray, body: np.ndarray) -> np.ndarray:
    on_body = np.abs(body) < FEATURE_TOLERANCE
    return np.median(colours[on_body] if on_body.any() else colours, axis=0)


# --- colour --------------------------------------------------------------------------------------------------------

def _main_part(aligned: np.ndarray, name: str) -> np.ndarray:
    """(N,) True for the result's points that lie on the object's main part (the prompt's colour)."""
    target = OBJECTS[name]
    part = target.paint_index(torch.from_numpy(aligned).float())
    is_main = torch.tensor([p.paint == MAIN for p in target.parts])
    return is_main[part].numpy()


def _colour_error(colours: np.ndarray, colour: str, pattern: str | None) -> float:
    """The main part's colour against the word: its mean, or where it shows a pattern, its coloured cells' mean
    (the white cells are the pattern's, and would pale the mean toward a tint)."""
    coloured = ~_is_white(colours) if pattern is not None and colour != "white" else np.ones(len(colours), bool)
    return colour_hue_error(colours[coloured if coloured.any() else slice(None)].mean(axis=0), colour)


def _is_white(colours: np.ndarray) -> np.ndarray:
    top, bottom = colours.max(axis=1), colours.min(axis=1)
    saturation = (top - bottom) / np.maximum(top, 1e-9)
    return (saturation < WHITE_MAX_SATURATION) & ((top + bottom) / 2.0 >= WHITE_MIN_LIGHTNESS)


def _pattern(aligned: np.ndarray, colours: np.ndarray) -> str | None:
    """The pattern (or None: plain) whose white cells agree best with where the result shows white."""
    if len(aligned) == 0:
        return None
    white = _is_white(colours)
    where = torch.from_numpy(aligned).float()
    agreement = {None: float(max(white.mean(), 1.0 - white.mean()))}  # plain: one colour (white too)
    for pattern in PATTERNS:
        # The result's own yaw is free where its shape does not fix it (a checkered sphere): its cells are found
        # at whichever quarter turn fits them best.
        turns = [where @ torch.from_numpy(_rotation(a)).float().T for a in np.arange(0.0, 90.0, PATTERN_STEP)]
        agreement[pattern] = max(float((pattern_mask(pattern, t).numpy() == white).mean()) for t in turns)
    return max(agreement, key=agreement.get)
