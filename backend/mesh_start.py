"""`init = mesh`: start a geometry from an artist's mesh before the first SDS step.

Nothing is fitted by gradient descent (threestudio fits an SDF network to
pysdf distances for 1000 Adam steps): a geometry adds what it learns to a
start shape and start colours held on grids (`start_resolution`,
`start_colour_resolution`), and those grids are the mesh's own signed
distance (geometry/mesh_distance.py) and its colours splatted from surface
samples. So the extracted surface is the mesh's to a fraction of a cell, in
its colours, at step 0, in seconds. A colour grid (not only the surface)
carries the colour a little off the wall along the normals, so it holds
wherever the extracted surface or a render's ray meets the wall.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from blender_dreamfusion.shared import MeshData

from .geometry import Geometry, GeometryConfig, make_geometry
from .geometry.colour import ColourConfig, ColourField
from .geometry.mesh_distance import mesh_signed_distance
from .mesh_metrics import SurfaceSamples, surface_samples
from .scene_mapping import SceneMapping

#: Colours are clipped to this margin inside [0, 1] before taking logits (sigmoid never reaches 0 or 1).
_COLOUR_MARGIN = 0.5 / 255.0


@dataclass(frozen=True)
class MeshStartConfig:
    """How a start mesh is taken in (TrainerConfig.mesh_start)."""

    #: Start-shape grid nodes per axis: at 128 a fitted surface lies within ~0.1 % of a mesh's size of it.
    resolution: int = 128
    #: Start-colour grid nodes per axis (3 floats a node: 96^3 is 10 MB in a checkpoint).
    colour_resolution: int = 96
    #: Surface samples splatted into the colour grid, and how far off the wall (scene metres, either side
    #: along the normal) they reach.
    colour_samples: int = 200_000
    colour_spread: float = 0.03


def used_positions(mesh: MeshData) -> np.ndarray:
    return mesh.positions[np.unique(mesh.triangles)]


def start_samples(positions: np.ndarray, triangles: np.ndarray, colours: np.ndarray, settings: MeshStartConfig,
                  seed: int) -> SurfaceSamples:
    """Surface samples of a (scene-frame) mesh, pushed up to `colour_spread` off the wall along the normals."""
    rng = np.random.default_rng(seed)
    samples = surface_samples(positions, triangles, colours, settings.colour_samples, rng)
    offsets = rng.uniform(-settings.colour_spread, settings.colour_spread, size=(len(samples.points), 1))
    return SurfaceSamples(samples.points + offsets * samples.normals, samples.colours, samples.normals)


def splat_colours(points: np.ndarray, colours: np.ndarray, bound: float, resolution: int) -> np.ndarray:
    """Colour logits at resolution^3 nodes spanning the bound, indexed [x, y, z] (R, R, R, 3): each node the mean
    colour of the samples nearest it, nodes without samples the colour of the nearest node with some."""
    r = resolution
    index = np.clip(np.round((np.asarray(points) + bound) / (2.0 * bound) * (r - 1)).astype(np.int64), 0, r - 1)
    flat = np.ravel_multi_index(index.T, (r, r, r))
    counts = np.bincount(flat, minlength=r**3)
    sums = np.stack([np.bincount(flat, weights=colours[:, c], minlength=r**3) for c in range(3)], axis=1)
    filled = counts > 0
    mean = np.where(filled[:, None], sums / np.maximum(counts, 1)[:, None], 0.5).reshape(r, r, r, 3)
    nearest = ndimage.distance_transform_edt(~filled.reshape(r, r, r), return_distances=False, return_indices=True)
    grid = np.clip(mean[nearest[0], nearest[1], nearest[2]], _COLOUR_MARGIN, 1.0 - _COLOUR_MARGIN)
    return np.log(grid / (1.0 - grid)).astype(np.float32)


def start_geometry(name: str, config: GeometryConfig, render_resolution: int, mesh: MeshData,
                   mapping: SceneMapping, settings: MeshStartConfig, samples: SurfaceSamples, *,
                   locked: bool = False, should_stop: Callable[[], bool] | None = None) -> Geometry:
    """A fresh geometry `name` that starts as `mesh` (world frame, put in the scene by `mapping`), shape and
    colour; `samples` are its scene-frame `start_samples`. `locked`: the shape will only be rendered, never
    trained or extracted (lock_geometry), so an open mesh may be a thin shell (`mesh_signed_distance`).
    `should_stop` is asked during the fit (Stopped)."""
    config = dataclasses.replace(config, start_resolution=settings.resolution,
                                 start_colour_resolution=settings.colour_resolution)
    field = make_geometry(name, config, render_resolution)
    scene = mapping.to_scene(mesh.positions)
    field.set_start_shape(torch.from_numpy(mesh_signed_distance(scene, mesh.triangles, field.bound,
                                                                settings.resolution, open_shell=locked,
                                                                should_stop=should_stop)))
    field.set_start_colour(torch.from_numpy(splat_colours(samples.points, samples.colours, field.bound,
                                                          settings.colour_resolution)))
    return field


def start_colour_field(bound: float, samples: SurfaceSamples, settings: MeshStartConfig) -> ColourField:
    """A colour field (a locked geometry's) that starts as the colours of `samples`."""
    colour = ColourField(ColourConfig(bound=bound, start_colour_resolution=settings.colour_resolution))
    colour.set_start_colour(torch.from_numpy(splat_colours(samples.points, samples.colours, bound,
                                                           settings.colour_resolution)))
    return colour
