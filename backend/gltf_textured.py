"""A .glb of a UV-mapped mesh with its albedo texture embedded as the material's baseColorTexture.

glTF attributes are per vertex, so vertices are split where the UV layout cuts them. The texture is a PNG in
the binary chunk (sRGB, as glTF requires of a base colour); the UVs' v is flipped to glTF's top-left origin.

The vertex albedo is kept as the custom attribute `_ALBEDO` (linear float RGBA, which Blender's importer turns
into a colour attribute), not as COLOR_0: the spec multiplies COLOR_0 into the base colour, so a texture and
COLOR_0 of the same albedo would render it squared (darker) in Blender and every other viewer.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from blender_dreamfusion.shared import MeshData, Texture

_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP, _REPEAT = 9729, 9987, 33071, 10497


def split_at_seams(mesh: MeshData, uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source vertex per new vertex, its UV, new triangles): one vertex per distinct (vertex, UV) pair."""
    corners = mesh.triangles.reshape(-1).astype(np.int64)
    uv = np.ascontiguousarray(uvs, np.float32)
    key = np.stack([corners, uv[:, 0].view(np.int32).astype(np.int64), uv[:, 1].view(np.int32).astype(np.int64)],
                   axis=1)
    unique, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return unique[:, 0], uv[first], inverse.reshape(-1, 3).astype(np.uint32)


def textured_glb(mesh: MeshData, texture: Texture, positions_y_up: np.ndarray, linear_albedo: np.ndarray,
                 name: str) -> bytes:
    """The .glb bytes. `positions_y_up` and `linear_albedo` (float RGBA 0-1) are per vertex of `mesh`."""
    from PIL import Image as PILImage

    source, uv, triangles = split_at_seams(mesh, texture.uvs)
    positions = np.ascontiguousarray(positions_y_up[source], np.float32)
    # Normals of the welded mesh, so a seam does not show as a crease (an importer shades flat without them).
    normals = np.ascontiguousarray(_vertex_normals(positions_y_up, mesh.triangles)[source], np.float32)
    texcoords = np.ascontiguousarray(np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1), np.float32)
    albedo = np.ascontiguousarray(linear_albedo[source], np.float32)
    png = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(texture.image)).save(png, format="PNG", optimize=False)
    blob, views, accessors = bytearray(), [], []

    def view(data: bytes, target: int | None = None) -> int:
        while len(blob) % 4:
            blob.append(0)
        entry = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            entry["target"] = target
        blob.extend(data)
        views.append(entry)
        return len(views) - 1

    def accessor(array: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        entry = {"bufferView": view(array.tobytes(), target), "componentType": component,
                 "count": int(len(array)), "type": kind}
        if bounds:
            entry["min"] = [float(v) for v in array.min(axis=0)]
            entry["max"] = [float(v) for v in array.max(axis=0)]
        accessors.append(entry)
        return len(accessors) - 1

    attributes = {"POSITION": accessor(positions, "VEC3", _FLOAT, _ARRAY_BUFFER, bounds=True),
                  "NORMAL": accessor(normals, "VEC3", _FLOAT, _ARRAY_BUFFER),
                  "TEXCOORD_0": accessor(texcoords, "VEC2", _FLOAT, _ARRAY_BUFFER),
                  "_ALBEDO": accessor(albedo, "VEC4", _FLOAT, _ARRAY_BUFFER)}
    indices = accessor(triangles.reshape(-1), "SCALAR", _UINT, _ELEMENT_ARRAY_BUFFER)
    image_view = view(png.getvalue())
    tiles = bool((texture.uvs < 0).any() or (texture.uvs > 1).any())  # an artist's own UVs may tile
    wrap = _REPEAT if tiles else _CLAMP
    document = {
        "asset": {"version": "2.0", "generator": "DreamFusion for Blender"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{"attributes": attributes, "indices": indices, "material": 0,
                                                   "mode": 4}]}],
        "materials": [{"name": name, "pbrMetallicRoughness": {"baseColorTexture": {"index": 0},
                                                             "metallicFactor": 0.0, "roughnessFactor": 0.8}}],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": wrap, "wrapT": wrap}],
        "images": [{"bufferView": image_view, "mimeType": "image/png", "name": name}],
        "buffers": [{"byteLength": len(blob)}], "bufferViews": views, "accessors": accessors,
    }
    return _container(json.dumps(document, separators=(",", ":")).encode("utf-8"), bytes(blob))


def _vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (a vertex no triangle uses gets +Y)."""
    corners = np.asarray(positions, np.float64)[np.asarray(triangles, np.int64)]
    face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros((len(positions), 3))
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 0, normals / np.maximum(length, 1e-30), [0.0, 1.0, 0.0])


def _container(document: bytes, blob: bytes) -> bytes:
    document += b" " * (-len(document) % 4)
    blob += b"\0" * (-len(blob) % 4)
    chunks = struct.pack("<II", len(document), 0x4E4F534A) + document + struct.pack("<II", len(blob), 0x004E4942) + blob
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks
