"""Read a start mesh (`--init-from FILE`) into Blender's frame with the conventions `export.py` writes (each
format's, declared in `shared/formats.py`): a Y-up file is turned back to Z-up and linear vertex colours become
sRGB, so a result this backend exported comes back where it was, in its colours. A file without vertex colours
gets none (the fit paints it mid grey).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blender_dreamfusion.shared import MeshData
from blender_dreamfusion.shared.formats import READABLE, from_y_up, linear_to_srgb, read_format


class MeshFileError(ValueError):
    """A start-mesh file that cannot be used; the message names the file and what is wrong."""


def read_mesh(path: str | Path) -> MeshData:
    """The triangles of every part in `path` (scene transforms applied), in Blender's frame; mid grey where the
    file has no vertex colours."""
    return read_mesh_with_uvs(path)[0]


def read_mesh_with_uvs(path: str | Path) -> tuple[MeshData, np.ndarray | None]:
    """`read_mesh`, and the file's UVs, one per triangle corner ((3M) x 2 float32, (0, 0) bottom-left), or None
    when it has none."""
    import trimesh

    path = Path(path).expanduser()
    form = read_format(path.name)
    if form is None:
        raise MeshFileError(f"{path.name!r}: a start mesh must be one of {', '.join(READABLE)}")
    if not path.is_file():
        raise MeshFileError(f"{str(path)!r}: no such file")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types for a damaged file
        raise MeshFileError(f"{path.name!r} cannot be read as a mesh: {type(exc).__name__}: {exc}") from None
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), np.int64).reshape(-1, 3)
    positions = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), np.float64).reshape(-1, 3)
    if len(faces) == 0:
        raise MeshFileError(f"{path.name!r} holds no triangles")
    if form.y_up:
        positions = from_y_up(positions)
    colours = _vertex_colours(loaded, len(positions), linear=form.linear_colours)
    try:
        mesh = MeshData.coerce(positions, faces, colours)
    except ValueError as exc:  # non-finite positions, indices past int32
        raise MeshFileError(f"{path.name!r}: {exc}") from None
    return mesh, _corner_uvs(loaded, faces)


def _corner_uvs(mesh, faces: np.ndarray) -> np.ndarray | None:
    # trimesh keeps UVs per vertex with (0, 0) at the bottom left, flipping glTF's v as it loads.
    uv = getattr(getattr(mesh, "visual", None), "uv", None)
    if uv is None:
        return None
    uv = np.asarray(uv, np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2 or len(uv) <= int(faces.max()) or not np.isfinite(uv).all():
        return None
    return np.ascontiguousarray(uv[faces.reshape(-1)], np.float32)


def _vertex_colours(mesh, n: int, linear: bool) -> np.ndarray:
    visual = getattr(mesh, "visual", None)
    if visual is None or getattr(visual, "kind", None) != "vertex":
        return np.full((n, 4), (128, 128, 128, 255), np.uint8)
    colours = np.array(visual.vertex_colors, np.uint8).reshape(n, 4)
    if linear:
        rgb = linear_to_srgb(colours[:, :3] / 255.0)
        colours[:, :3] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return colours
