"""Refinements: the JobSpec a refinement sends, and the frame its meshes are written in. Pure Python.

A refinement is a new job; its source (the artist's mesh, or the result it continues) is never written:

- from a mesh: `init = "mesh"`, the mesh travels with the submit in Blender's world frame; with
  `lock_geometry` the backend keeps that very mesh and only paints it (Texture This Mesh);
- continue / re-prompt a job: `init = "checkpoint"` from the parent's job id; `steps` is the total, so
  "+N steps" is the parent's step + N. The backend keeps the parent's frame and lock.

Frames. The backend sends every mesh in the frame the job's start mesh came in: the world frame at submit
time, or the parent's for a continued job. A job's object stores that as `frame` (a 4x4, row-major): the
matrix that took the object's local coordinates to the wire's when the job started, so local =
frame^-1 @ wire. The object's own matrix_world is not used: the artist may move the new object while it
streams and it stays where it was put. A job generated from the blob has the identity frame (the mesh data
holds what the wire carries, as before refinement existed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..shared.jobspec import JobSpec
from ..shared.mesh import COLOR_DTYPE, MeshData, check_init_mesh

#: The identity frame, flat and row-major (16 floats).
IDENTITY: tuple[float, ...] = tuple(float(i == j) for i in range(4) for j in range(4))
#: What a start mesh without a colour attribute is sent with (sRGB + alpha).
GREY = (128, 128, 128, 255)


@dataclass(frozen=True)
class RefineTarget:
    """What a refinement's new object needs once the backend names its job (kept per submit request)."""

    #: Tags the new object (made when the button is pressed) until the job has an id.
    token: str
    frame: tuple[float, ...] = IDENTITY
    parent_job: str = ""
    source_object: str = ""
    #: The object holds the artist's own mesh (a locked job started from it, or its continuation): write only
    #: the colours the backend sends, keeping the artist's faces, UVs and vertex order.
    keep_geometry: bool = False
    #: The object hidden when the button was pressed (the source, or the result continued): shown again if the
    #: backend refuses the job.
    hidden_object: str = ""


def continue_spec(parent: JobSpec, parent_id: str, parent_step: int, extra_steps: int, lock_geometry: bool,
                  prompt: str | None = None) -> JobSpec:
    """The parent's settings continued from its checkpoint for `extra_steps` more (re-prompted with `prompt`).
    A locked parent stays locked (the backend would force it anyway). SpecError names a bad field."""
    values = parent.to_dict()
    values.update(init="checkpoint", init_from=parent_id, steps=int(parent_step) + int(extra_steps),
                  lock_geometry=bool(lock_geometry or parent.lock_geometry))
    if prompt is not None:
        values["prompt"] = prompt
    return JobSpec.from_dict(values)


def mesh_spec(values: Mapping[str, Any], lock_geometry: bool) -> JobSpec:
    """The panel's settings (a JobSpec dict) started from a mesh sent with the submit. A kept mesh is neither
    smoothed nor decimated, whatever the Output settings say (the spec would refuse them)."""
    kept = {"smoothing": 0, "face_count": 0} if lock_geometry else {}
    return JobSpec.from_dict({**values, "init": "mesh", "init_from": "", "lock_geometry": bool(lock_geometry),
                              **kept})


def start_mesh(positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
               field: str = "init_mesh") -> MeshData:
    """A start mesh in wire dtypes (mid grey where there is no colour), checked as the backend will check it:
    BadBuffer naming `field` for an empty mesh, too many triangles, or no extent."""
    if colors is None:
        colors = np.empty((len(positions), 4), COLOR_DTYPE)
        colors[:] = GREY
    mesh = MeshData.coerce(positions, triangles, colors)
    check_init_mesh(mesh, field)
    return mesh


def flat_matrix(matrix: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """A 4x4 (a mathutils.Matrix iterates its rows) as 16 floats, row-major."""
    return tuple(float(v) for row in matrix for v in row)


def transform(positions: np.ndarray, frame: Sequence[float]) -> np.ndarray:
    """N x 3 points through a flat 4x4 (float32 out; in double inside, so a far-off object keeps its detail)."""
    matrix = np.asarray(frame, np.float64).reshape(4, 4)
    points = np.asarray(positions, np.float64).reshape(-1, 3)
    return (points @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)


def to_local(positions: np.ndarray, frame: Sequence[float]) -> np.ndarray:
    """Wire positions into the object's local coordinates (the identity frame costs nothing)."""
    if tuple(float(v) for v in frame) == IDENTITY:
        return positions
    return transform(positions, np.linalg.inv(np.asarray(frame, np.float64).reshape(4, 4)).ravel())


def is_frame(value: Any) -> bool:
    """Whether a stored value (a custom property, a job-list entry) is a usable flat 4x4."""
    try:
        matrix = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return False
    return matrix.shape == (16,) and bool(np.isfinite(matrix).all()) and abs(np.linalg.det(matrix.reshape(4, 4))) > 0
