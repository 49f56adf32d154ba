"""The final result's post-processing, in order: smoothing, decimation, colours, UV atlas, bake."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from blender_dreamfusion.shared import JobSpec, MeshData, Texture

from .atlas import uv_atlas
from ..work_budget import DEFAULT_MAX_BAKE_TEXELS, ShouldStop, bake_work
from .bake import AlbedoAt, bake
from .cleanup import decimate, smooth


def wrap_into_tile(uvs: np.ndarray) -> np.ndarray:
    """Per-corner UVs with each triangle moved by whole tiles into [0, 1] (a tiling layout bakes into the one
    texture it repeats)."""
    corners = np.asarray(uvs, np.float32).reshape(-1, 3, 2)
    shift = np.floor(corners.min(axis=1, keepdims=True))
    return np.ascontiguousarray((corners - shift).reshape(-1, 2), np.float32)


def asks_for_asset(spec: JobSpec) -> bool:
    """Whether `spec` asks for any post-processing of its final mesh."""
    return bool(spec.smoothing or spec.face_count or spec.texture_size)


@dataclass
class Asset:
    mesh: MeshData
    texture: Texture | None
    #: Seconds per step that ran ("smoothing", "decimation", "atlas", "bake").
    seconds: dict[str, float] = field(default_factory=dict)
    #: What was asked for but not done, and why (empty when everything was).
    notes: list[str] = field(default_factory=list)


def finish_asset(mesh: MeshData, spec: JobSpec, albedo_at: AlbedoAt, keep_geometry: bool = False,
                 own_uvs: np.ndarray | None = None, should_stop: ShouldStop | None = None,
                 max_bake_texels: int = DEFAULT_MAX_BAKE_TEXELS) -> Asset:
    """`mesh` (the final extraction, in the world frame) made into what `spec` asks for.

    `albedo_at` gives the field's sRGB albedo at world-frame points. `keep_geometry`: the mesh is the artist's
    own (locked) and its vertices are not moved or removed; `own_uvs` are its per-corner UVs, baked into
    instead of a new atlas when the texture is baked. `should_stop` is asked between the bake's chunks (Stopped).
    Own UVs over `max_bake_texels` (0: no limit) are not baked into: a submit over it is refused, so this
    catches only UVs no submit check saw (a continuation of a locked job at a larger texture_size).
    """
    asset = Asset(mesh, None)
    if not mesh.triangle_count:
        return asset
    positions, triangles = mesh.positions.astype(np.float64), mesh.triangles.astype(np.int64)
    changed = False
    if keep_geometry and (spec.smoothing or spec.face_count):
        asset.notes.append("smoothing and face_count were not applied: the geometry is the locked start mesh")
    elif spec.smoothing or spec.face_count:
        if spec.smoothing:
            started = time.perf_counter()
            positions = smooth(positions, triangles, spec.smoothing)
            asset.seconds["smoothing"] = time.perf_counter() - started
            changed = True
        if spec.face_count and spec.face_count < len(triangles):
            started = time.perf_counter()
            positions, triangles = decimate(positions, triangles, spec.face_count)
            asset.seconds["decimation"] = time.perf_counter() - started
            changed = True
    if changed:
        asset.mesh = MeshData.coerce(positions, triangles, albedo_at(positions))
    if spec.texture_size:
        size = spec.texture_size
        uvs = own_uvs if keep_geometry and own_uvs is not None and len(own_uvs) == 3 * len(triangles) else None
        if uvs is not None:
            uvs = wrap_into_tile(uvs)
            if max_bake_texels and bake_work(uvs, size) > max_bake_texels:
                uvs = None  # many triangles each spanning most of the tile: unbakeable in useful time
                asset.notes.append("the start mesh's own UVs overlap too much to bake (many triangles each cover "
                                   "most of the texture); baked into a new atlas instead")
        started = time.perf_counter()
        if uvs is None:
            uvs = uv_atlas(positions, triangles, size)
        asset.seconds["atlas"] = time.perf_counter() - started
        started = time.perf_counter()
        image = bake(positions, triangles, uvs, size, albedo_at, should_stop)
        asset.seconds["bake"] = time.perf_counter() - started
        asset.texture = Texture(np.ascontiguousarray(uvs, np.float32), image)
    return asset
