"""Did SDS make the named thing? Nearest primitive by Chamfer distance, and the hue of the mean colour."""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from blender_dreamfusion.shared import MeshData

from ..extract import extract_mesh
from .primitives import PrimitiveField
from .vocab import COLOUR_RGB, SHAPES

YAW_STEPS = 36
#: The toy prior paints white at 0.92 sRGB; a mean colour this grey or this tinted is not white.
WHITE_MAX_SATURATION = 0.25
WHITE_MIN_LIGHTNESS = 0.6
#: A mean colour less saturated than this is a tint of grey, not the colour its hue leans to: a pale beige
#: (0.55, 0.48, 0.41; HSV saturation 0.26) has orange's hue within 1 degree. The palette's colours lie at
#: 0.80-0.95, and the mean of a colour with the same area of white (a striped or checkered mean) at 0.36-0.48.
CHROMATIC_MIN_SATURATION = 0.35
POINTS = 3000


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre on the bounding box, scale to unit RMS radius (so size does not decide the shape)."""
    centred = points - (points.min(axis=0) + points.max(axis=0)) / 2.0
    return centred / max(1e-9, float(np.sqrt((centred**2).sum(axis=1).mean())))


def _subsample(points: np.ndarray, count: int = POINTS) -> np.ndarray:
    if len(points) <= count:
        return points
    return points[np.random.default_rng(0).choice(len(points), count, replace=False)]


@lru_cache(maxsize=None)
def primitive_points(shape: str) -> np.ndarray:
    mesh = extract_mesh(PrimitiveField(shape), 96).mesh
    return normalise(_subsample(mesh.positions.astype(np.float64)))


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2.0


def chamfer_best_yaw(points: np.ndarray, reference: np.ndarray) -> float:
    """Smallest Chamfer distance over rotations about Z (the prior fixes up, not necessarily yaw)."""
    return _best_yaw(points, reference)[0]


def _best_yaw(points: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    best, best_angle = math.inf, 0.0
    for k in range(YAW_STEPS):
        angle = 2 * math.pi * k / YAW_STEPS
        c, s = math.cos(angle), math.sin(angle)
        rotated = points @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
        distance = chamfer(rotated, reference)
        if distance < best:
            best, best_angle = distance, math.degrees(angle)
    return best, best_angle


def yaw_offset(mesh: MeshData, shape: str, symmetry: float = 90.0) -> float:
    """Degrees the mesh is turned about Z from the primitive's pose, folded into [0, symmetry/2] (cube: 90)."""
    points = normalise(_subsample(mesh.positions.astype(np.float64)))
    angle = _best_yaw(points, primitive_points(shape))[1] % symmetry
    return min(angle, symmetry - angle)


def shape_distances(mesh: MeshData) -> dict[str, float]:
    points = normalise(_subsample(mesh.positions.astype(np.float64)))
    return {shape: round(chamfer_best_yaw(points, primitive_points(shape)), 4) for shape in SHAPES}


def hue_error(mesh: MeshData, colour: str) -> float:
    """Degrees between the mean vertex colour's hue and the colour word's (`colour_hue_error`)."""
    return colour_hue_error(mesh.colors[:, :3].astype(np.float64).mean(axis=0) / 255.0, colour)


def colour_hue_error(rgb: np.ndarray, colour: str) -> float:
    """Degrees between an sRGB colour's hue and the colour word's. White has no hue: it is judged by saturation
    and lightness (a grey or near-black colour is not white), 0 when right, else at least 45. Any other colour
    must also be saturated (CHROMATIC_MIN_SATURATION): a tint of grey is at least 45 off whatever its hue."""
    h, lightness, _ = colorsys.rgb_to_hls(*rgb)
    s = colorsys.rgb_to_hsv(*rgb)[1]  # HLS saturation runs high near white; HSV's does not
    if colour == "white":
        if s < WHITE_MAX_SATURATION and lightness >= WHITE_MIN_LIGHTNESS:
            return 0.0
        return round(float(180.0 * min(1.0, max(s, 1.0 - lightness, 0.25))), 1)
    target = colorsys.rgb_to_hls(*COLOUR_RGB[colour])[0]
    difference = abs(h - target) % 1.0
    hue = round(360.0 * min(difference, 1.0 - difference), 1)
    return hue if s >= CHROMATIC_MIN_SATURATION else max(hue, 45.0)
