"""The mesh file formats: the one place each suffix's conventions are declared. The backend's writer
(`backend/export.py`) and reader (`backend/mesh_import.py`), the command lines' `--out` checks, the server's
result files and the check of what a Ray node may send (`backend/server/node_reports.py`), and the add-on's
importers (`blender_addon/mesh_source.py`, the batch's mesh columns) all read it.

Blender's frame is Z-up; a Y-up format is turned on the way out, (x, y, z) -> (x, z, -y), and back on the way in.
Our colours are sRGB (vertex colours and textures alike); a format whose vertex colours are linear (glTF, by its
spec) is converted on the way out and back, so a result read again comes back where it was, in its colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

import numpy as np


@dataclass(frozen=True)
class MeshFormat:
    suffix: str
    #: Stored Y-up (glTF's spec; Blender's OBJ import default), so Blender's Z-up frame is turned.
    y_up: bool
    #: Vertex colours are linear in the file (glTF's spec); sRGB otherwise, as Blender reads them.
    linear_colours: bool
    #: The backend writes results in it (`--out`); every format here can be read as a start mesh.
    written: bool
    #: A result's texture goes with it: embedded (.glb) or in `companions` beside it (.obj's .mtl and .png).
    textures: bool
    #: Blender's importer: (bpy.ops module, operator name).
    blender_importer: tuple[str, str]
    #: Files a textured result writes beside `<stem><suffix>`: `<stem>` + each of these.
    companions: tuple[str, ...] = ()


MESH_FORMATS: dict[str, MeshFormat] = {f.suffix: f for f in (
    MeshFormat(".glb", y_up=True, linear_colours=True, written=True, textures=True,
               blender_importer=("import_scene", "gltf")),
    MeshFormat(".gltf", y_up=True, linear_colours=True, written=False, textures=False,
               blender_importer=("import_scene", "gltf")),
    MeshFormat(".obj", y_up=True, linear_colours=False, written=True, textures=True,
               blender_importer=("wm", "obj_import"), companions=(".mtl", "_albedo.png")),
    MeshFormat(".ply", y_up=False, linear_colours=False, written=True, textures=False,
               blender_importer=("wm", "ply_import")),
)}
#: Suffixes a result may be written as (`--out`), the default first.
WRITTEN: tuple[str, ...] = tuple(s for s, f in MESH_FORMATS.items() if f.written)
#: Suffixes a start mesh may be read from.
READABLE: tuple[str, ...] = tuple(MESH_FORMATS)
#: The format a server writes each job's result in (`files` names it by its suffix without the dot).
RESULT_FORMAT = ".glb"
#: What `export_result` says when it writes a textured result to a format that has no textures.
NO_TEXTURE_NOTE = "{suffix} carries vertex colours only; write {others} for the texture"


def written_format(name: str) -> MeshFormat:
    """The format a result file called `name` is written in (by its suffix, any case); ValueError in the words of
    the `--out` flags every written path comes from."""
    found = MESH_FORMATS.get(_suffix(name))
    if found is None or not found.written:
        raise ValueError(f"--out must end in {', '.join(WRITTEN)}, got {name!r}")
    return found


def read_format(name: str) -> MeshFormat | None:
    """The format a start-mesh file called `name` is read as (by its suffix, any case); None when none reads it."""
    return MESH_FORMATS.get(_suffix(name))


def _suffix(name: str) -> str:
    return PurePath(name).suffix.lower()


def no_texture_note(suffix: str) -> str:
    others = " or ".join(s for s in WRITTEN if MESH_FORMATS[s].textures)
    return NO_TEXTURE_NOTE.format(suffix=suffix, others=others)


def result_file_pattern(stem: str = "result") -> str:
    """A regular expression for every file a result `<stem>.<written suffix>` and its companions may be."""
    names = {f"{stem}{suffix}" for suffix in WRITTEN}
    names |= {f"{stem}{extra}" for suffix in WRITTEN for extra in MESH_FORMATS[suffix].companions}
    return "(?:" + "|".join(sorted(name.replace(".", r"\.") for name in names)) + ")"


# --- the conversions every format's reader and writer share --------------------------------------------------

def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(np.clip(c, 0.0, None), 1.0 / 2.4) - 0.055)


def to_y_up(positions: np.ndarray) -> np.ndarray:
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    return np.stack([x, z, -y], axis=1)


def from_y_up(positions: np.ndarray) -> np.ndarray:
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    return np.stack([x, -z, y], axis=1)
