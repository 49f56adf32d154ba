"""The toy-objects prior's world: every object, its parts, true size, bottom and front, declared once.

Each object is a union of analytic parts (signed distances in metres, Blender's frame: Z up, the front toward
-Y, the front camera's side) placed where SDS should make it: centred on the Z axis, about half a metre in
radius, as the five primitives of `primitives.py` are. The training renders draw these (`ObjectField`), and
the scoring (`quality.py`) compares results against the same declarations at their true size and place: no
second copy of a shape exists anywhere.

Parts are painted by role: `MAIN` takes the prompt's colour (and pattern); the others keep their own (a
snowman's orange nose, a lamp's dark pole). An object with a front also declares its two-faced variant
(`janus_parts`: the front's features mirrored to the back), so a result with two fronts can be recognised as
nearer that variant than the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from blender_dreamfusion.shared import MeshData

from .primitives import DENSITY, SOFTNESS, _capped_cone
from .primitives import sdf as primitive_sdf

Sdf = Callable[[torch.Tensor], torch.Tensor]
#: The part that takes the prompt's colour and pattern.
MAIN = "main"
#: sRGB albedo of white, as the colour words paint it (vocab.COLOUR_RGB["white"]); patterns alternate with it.
WHITE = (0.92, 0.92, 0.92)
#: Stripes and checks: one band of colour, one of white, each this many metres.
PATTERN_PERIOD = 0.1
PATTERNS = ("striped", "checkered")


@dataclass(frozen=True)
class Part:
    name: str
    sdf: Sdf
    #: MAIN, or an sRGB colour the part always has.
    paint: str | tuple[float, float, float] = MAIN


@dataclass(frozen=True)
class ToyObject:
    name: str
    parts: tuple[Part, ...]
    #: Axis-aligned extent (x, y, z) in metres and the lowest z: the truth a result's size and drip are scored by.
    extent: tuple[float, float, float]
    bottom: float
    #: Parts that make a second front: each the mirror image of the part named at the same place in
    #: `front_parts` (the features that say where the front is); empty for an object without a front.
    janus_parts: tuple[Part, ...] = ()
    front_parts: tuple[str, ...] = ()
    #: False where the prompt's colour words do not apply (the snowman is white).
    colourable: bool = True

    @property
    def has_front(self) -> bool:
        return bool(self.janus_parts)

    @property
    def height(self) -> float:
        return self.extent[2]

    def signed_distance(self, points: torch.Tensor, janus: bool = False) -> torch.Tensor:
        return self._distances(points, janus).amin(dim=-1)

    def paint_index(self, points: torch.Tensor, janus: bool = False) -> torch.Tensor:
        """(N,) index into `parts_for(janus)` of the part nearest each point (the part whose colour it shows)."""
        return self._distances(points, janus).argmin(dim=-1)

    def parts_for(self, janus: bool = False) -> tuple[Part, ...]:
        return self.parts + (self.janus_parts if janus else ())

    def part(self, name: str) -> Part:
        return next(p for p in self.parts_for(janus=True) if p.name == name)

    def body_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance of the object without its front features (what is left where a front is missing)."""
        return torch.stack([p.sdf(points) for p in self.parts if p.name not in self.front_parts], -1).amin(-1)

    def _distances(self, points: torch.Tensor, janus: bool) -> torch.Tensor:
        return torch.stack([part.sdf(points) for part in self.parts_for(janus)], dim=-1)


# --- signed distances of the parts' shapes -----------------------------------------------------------------------

def _t(xyz) -> torch.Tensor:
    return torch.tensor(xyz, dtype=torch.float32)


def sphere(centre, radius: float) -> Sdf:
    c = _t(centre)
    return lambda p: (p - c).norm(dim=-1) - radius


def box(centre, half) -> Sdf:
    c, h = _t(centre), _t(half)

    def distance(p):
        q = (p - c).abs() - h
        return q.clamp_min(0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0)
    return distance


def cylinder(centre, radius: float, half_height: float) -> Sdf:
    """Upright (axis along Z)."""
    c = _t(centre)

    def distance(p):
        q = p - c
        d = torch.stack([torch.hypot(q[:, 0], q[:, 1]) - radius, q[:, 2].abs() - half_height], -1)
        return d.clamp_min(0).norm(dim=-1) + d.amax(dim=-1).clamp_max(0)
    return distance


def cone(centre, half_height: float, r_bottom: float, r_top: float, axis: int = 2, flip: bool = False) -> Sdf:
    """A capped cone along `axis` (r_bottom toward -axis, or toward +axis when `flip`)."""
    c = _t(centre)
    others = [i for i in range(3) if i != axis]

    def distance(p):
        q = p - c
        along = -q[:, axis] if flip else q[:, axis]
        return _capped_cone(torch.hypot(q[:, others[0]], q[:, others[1]]), along, half_height, r_bottom, r_top)
    return distance


def ellipsoid(centre, radii) -> Sdf:
    """Inigo Quilez's bound for an ellipsoid (exact on the surface, a lower bound off it)."""
    c, r = _t(centre), _t(radii)

    def distance(p):
        q = p - c
        k0 = (q / r).norm(dim=-1)
        k1 = (q / (r * r)).norm(dim=-1).clamp_min(1e-9)
        return k0 * (k0 - 1.0) / k1
    return distance


def torus_xz(centre, major: float, minor: float) -> Sdf:
    """A ring standing in the XZ plane (a mug's handle seen from the front)."""
    c = _t(centre)

    def distance(p):
        q = p - c
        return torch.stack([torch.hypot(q[:, 0], q[:, 2]) - major, q[:, 1]], -1).norm(dim=-1) - minor
    return distance


def cut(shape: Sdf, keep: Sdf) -> Sdf:
    """`shape` where `keep` is inside (intersection)."""
    return lambda p: torch.maximum(shape(p), keep(p))


def minus(shape: Sdf, hole: Sdf) -> Sdf:
    return lambda p: torch.maximum(shape(p), -hole(p))


def half_space(axis: int, at: float, above: bool) -> Sdf:
    """Inside where coordinate `axis` is above (or below) `at`."""
    return (lambda p: at - p[:, axis]) if above else (lambda p: p[:, axis] - at)


def gable_roof(eave_z: float, ridge_z: float, half_width: float, half_length: float) -> Sdf:
    """A pitched roof, its ridge along X over y = 0 (a bound, not an exact distance: fine for a crisp wall)."""
    rise, run = ridge_z - eave_z, half_width
    norm = (rise * rise + run * run) ** 0.5

    def distance(p):
        x, y, z = p.unbind(-1)
        slope = (y.abs() * rise + (z - ridge_z) * run) / norm
        return torch.stack([slope, eave_z - z, x.abs() - half_length], -1).amax(dim=-1)
    return distance


def _primitive(shape: str) -> Sdf:
    return lambda p: primitive_sdf(shape, p)


def _mirror_y(shape: Sdf) -> Sdf:
    flip = _t([1.0, -1.0, 1.0])
    return lambda p: shape(p * flip)


def _mirror_x(shape: Sdf) -> Sdf:
    flip = _t([-1.0, 1.0, 1.0])
    return lambda p: shape(p * flip)


# --- the objects ---------------------------------------------------------------------------------------------------

ORANGE = (0.95, 0.50, 0.05)
DARK = (0.18, 0.18, 0.2)
WOOD = (0.45, 0.28, 0.12)
BEIGE = (0.9, 0.85, 0.72)
BLACK = (0.05, 0.05, 0.05)

_MUG_HANDLE = cut(torus_xz((0.3, 0.0, 0.0), 0.17, 0.045), half_space(0, 0.28, above=True))
_SNOWMAN_NOSE = cone((0.0, -0.17, 0.36), 0.07, 0.035, 0.0, axis=1, flip=True)
_CHAIR_BACK = box((0.0, 0.24, 0.25), (0.27, 0.03, 0.25))
_HOUSE_DOOR = box((0.0, -0.3, -0.3), (0.08, 0.015, 0.15))


def _legs(xs: float, ys: float, radius: float, bottom: float, top: float, name: str = "legs") -> tuple[Part, ...]:
    half = (top - bottom) / 2.0
    return tuple(Part(f"{name} {i}", cylinder((sx * xs, sy * ys, bottom + half), radius, half))
                 for i, (sx, sy) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1))))


def _objects() -> dict[str, ToyObject]:
    objects = [
        ToyObject("cube", (Part("cube", _primitive("cube")),), (0.8, 0.8, 0.8), -0.4),
        ToyObject("sphere", (Part("sphere", _primitive("sphere")),), (1.0, 1.0, 1.0), -0.5),
        ToyObject("torus", (Part("torus", _primitive("torus")),), (1.14, 1.14, 0.34), -0.17),
        ToyObject("cone", (Part("cone", _primitive("cone")),), (0.96, 0.96, 0.9), -0.45),
        ToyObject("cylinder", (Part("cylinder", _primitive("cylinder")),), (0.8, 0.8, 0.84), -0.42),
        # A mug's handle is on its side (+X): seen from the front, to the right. Its front is -Y.
        ToyObject("mug", (
            Part("body", minus(cylinder((0, 0, 0), 0.3, 0.35), cylinder((0, 0, 0.07), 0.25, 0.35))),
            Part("handle", _MUG_HANDLE)),
            (0.815, 0.6, 0.7), -0.35, janus_parts=(Part("second handle", _mirror_x(_MUG_HANDLE)),),
            front_parts=("handle",)),
        ToyObject("table", (Part("top", box((0, 0, 0.17), (0.5, 0.32, 0.03))),
                            *_legs(0.43, 0.25, 0.035, -0.45, 0.14)),
                  (1.0, 0.64, 0.65), -0.45),
        ToyObject("chair", (Part("seat", box((0, 0, -0.03), (0.27, 0.27, 0.03))), Part("back", _CHAIR_BACK),
                            *_legs(0.23, 0.23, 0.03, -0.45, -0.06)),
                  (0.54, 0.54, 0.95), -0.45, janus_parts=(Part("second back", _mirror_y(_CHAIR_BACK)),),
                  front_parts=("back",)),
        ToyObject("snowman", (Part("bottom ball", sphere((0, 0, -0.26), 0.24), WHITE),
                              Part("middle ball", sphere((0, 0, 0.1), 0.17), WHITE),
                              Part("head", sphere((0, 0, 0.36), 0.11), WHITE),
                              Part("nose", _SNOWMAN_NOSE, ORANGE)),
                  (0.48, 0.48, 0.97), -0.5, janus_parts=(Part("second nose", _mirror_y(_SNOWMAN_NOSE), ORANGE),),
                  front_parts=("nose",), colourable=False),
        ToyObject("mushroom", (Part("cap", cut(ellipsoid((0, 0, 0.0), (0.42, 0.42, 0.3)),
                                                  half_space(2, 0.0, above=True))),
                               Part("stem", cylinder((0, 0, -0.215), 0.11, 0.235), BEIGE)),
                  (0.84, 0.84, 0.75), -0.45),
        ToyObject("lamp", (Part("shade", cone((0, 0, 0.25), 0.17, 0.3, 0.16)),
                           Part("pole", cylinder((0, 0, -0.145), 0.025, 0.265), DARK),
                           Part("base", cylinder((0, 0, -0.43), 0.2, 0.02), DARK)),
                  (0.6, 0.6, 0.87), -0.45),
        # A house's front is its door, toward -Y.
        ToyObject("house", (Part("walls", box((0, 0, -0.2), (0.36, 0.3, 0.25))),
                            Part("roof", gable_roof(0.05, 0.4, 0.38, 0.4), DARK),
                            Part("door", _HOUSE_DOOR, WOOD)),
                  (0.8, 0.76, 0.85), -0.45, janus_parts=(Part("second door", _mirror_y(_HOUSE_DOOR), WOOD),),
                  front_parts=("door",)),
    ]
    return {o.name: o for o in objects}


OBJECTS: dict[str, ToyObject] = _objects()
#: The five primitives, which `toy-shapes` knows too, and the objects only `toy-objects` knows.
PRIMITIVES = ("cube", "sphere", "torus", "cone", "cylinder")
COMPOSITES = tuple(name for name in OBJECTS if name not in PRIMITIVES)


def pattern_mask(pattern: str | None, points: torch.Tensor) -> torch.Tensor:
    """(N,) True where a pattern paints white: stripes are horizontal bands, checks a 3D checkerboard."""
    if pattern is None:
        return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    cells = torch.floor(points / PATTERN_PERIOD).long()
    if pattern == "striped":
        return cells[:, 2] % 2 == 1
    if pattern == "checkered":
        return cells.sum(dim=-1) % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")


class ObjectField(torch.nn.Module):
    """An object as a radiance field (the interface `renderer.render` draws, as `PrimitiveField`'s): density
    solid inside with a crisp wall, each part painted by its role, the main part in `colour` and `pattern`."""

    bound = 1.0

    def __init__(self, name: str, colour=(0.8, 0.8, 0.8), pattern: str | None = None, janus: bool = False):
        super().__init__()
        self.object, self.pattern, self.janus = OBJECTS[name], pattern, janus
        self.register_buffer("colour", torch.tensor(colour, dtype=torch.float32))
        paints = [p.paint for p in self.object.parts_for(janus)]
        self.register_buffer("part_colours", torch.tensor(
            [tuple(colour) if paint == MAIN else paint for paint in paints], dtype=torch.float32))
        self.register_buffer("is_main", torch.tensor([paint == MAIN for paint in paints]))

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        return self.object.signed_distance(points, self.janus)

    def forward(self, points: torch.Tensor):
        distances = self.object._distances(points, self.janus)
        density = DENSITY * torch.sigmoid(-distances.amin(dim=-1) / SOFTNESS)
        part = distances.argmin(dim=-1)
        rgb = self.part_colours[part]
        white = pattern_mask(self.pattern, points) & self.is_main[part]
        rgb = torch.where(white[:, None], torch.tensor(WHITE, device=points.device), rgb)
        return density, rgb

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self(points)[0]

    def normals(self, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
        grad = torch.stack([self.signed_distance(points + o) - self.signed_distance(points - o) for o in offsets], -1)
        return F.normalize(grad, dim=-1)


def true_mesh(name: str, colour=(0.8, 0.8, 0.8), pattern: str | None = None, janus: bool = False,
              resolution: int = 128) -> MeshData:
    """The object's exact surface (its signed distance's zero level) at its true size and place, painted as the
    training renders paint it: the truth results are scored against, and a perfect result for tests."""
    import mcubes

    axis = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    values = torch.cat([OBJECTS[name].signed_distance(chunk, janus) for chunk in grid.split(2**18)])
    vertices, triangles = mcubes.marching_cubes(values.reshape((resolution,) * 3).numpy().astype(np.float64), 0.0)
    positions = torch.from_numpy(vertices).float() * (2.0 / (resolution - 1)) - 1.0
    with torch.no_grad():
        rgb = ObjectField(name, colour, pattern, janus)(positions)[1]
    colors = np.concatenate([(rgb.numpy() * 255.0).round().astype(np.uint8),
                             np.full((len(positions), 1), 255, np.uint8)], axis=1)
    # mcubes winds triangles for a field that grows inward; a signed distance grows outward: flip them.
    return MeshData(positions.numpy(), triangles[:, ::-1].astype(np.int32).copy(), colors)


@lru_cache(maxsize=None)
def surface_points(name: str, janus: bool = False) -> torch.Tensor:
    """Points on the object's surface at its true size and place."""
    return torch.from_numpy(true_mesh(name, janus=janus).positions)
