"""Write meshes so Blender's default importers open them upright and correctly coloured.

.glb and .obj are Y-up (the glTF spec; Blender's OBJ import default), so
Blender's Z-up frame is rotated on the way out: (x, y, z) -> (x, z, -y).
.ply stays Z-up (Blender's PLY import default). glTF vertex colours are
linear by the spec, so our sRGB albedo is converted for .glb; .ply and .obj
carry sRGB, which is how Blender reads them.

A final result with a texture (`export_result`): .glb embeds it as the material's baseColorTexture
(backend/gltf_textured.py); .obj gets a .mtl and a .png beside it (map_Kd) and keeps its vertex colours;
.ply cannot carry a texture and stays vertex colours only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blender_dreamfusion.shared import MeshData, Texture

from blender_dreamfusion.shared.atomic import atomic_write

FORMATS = (".glb", ".obj", ".ply")
#: What `export_result` says when it writes a textured result to a format that has no textures.
PLY_NOTE = ".ply carries vertex colours only; write .glb or .obj for the texture"


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def to_y_up(positions: np.ndarray) -> np.ndarray:
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    return np.stack([x, z, -y], axis=1)


def export_mesh(mesh: MeshData, path: str | Path) -> Path:
    """Write `mesh` to .glb, .obj or .ply (by suffix), atomically."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out must end in {', '.join(FORMATS)}, got {path.name!r}")
    positions = mesh.positions.astype(np.float64)
    colors = np.array(mesh.colors)
    if suffix in (".glb", ".obj"):
        positions = to_y_up(positions)
    if suffix == ".glb":
        rgb = srgb_to_linear(colors[:, :3] / 255.0)
        colors[:, :3] = np.round(rgb * 255.0).astype(np.uint8)
    tm = trimesh.Trimesh(vertices=positions, faces=np.asarray(mesh.triangles), vertex_colors=colors, process=False)
    data = tm.export(file_type=suffix[1:], **({"include_color": True} if suffix == ".obj" else {}))
    if isinstance(data, str):
        data = data.encode("utf-8")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def export_result(mesh: MeshData, path: str | Path, texture: Texture | None = None) -> list[Path]:
    """Write a final result: `mesh`, textured when `texture` is given (see the module's docstring). Returns the
    files written, the mesh file first."""
    path = Path(path)
    suffix = path.suffix.lower()
    if texture is None or suffix == ".ply" or not mesh.triangle_count:
        return [export_mesh(mesh, path)]
    if suffix not in FORMATS:
        raise ValueError(f"--out must end in {', '.join(FORMATS)}, got {path.name!r}")
    if suffix == ".glb":
        from .gltf_textured import textured_glb

        linear = np.concatenate([srgb_to_linear(mesh.colors[:, :3] / 255.0), mesh.colors[:, 3:] / 255.0], axis=1)
        data = textured_glb(mesh, texture, to_y_up(mesh.positions.astype(np.float64)), linear, path.stem)
        return [atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))]
    return _textured_obj(mesh, texture, path)


def texture_png_path(path: Path) -> Path:
    """Where a textured .obj's albedo image goes: beside it, `<stem>_albedo.png`."""
    return path.with_name(path.stem + "_albedo.png")


def _textured_obj(mesh: MeshData, texture: Texture, path: Path) -> list[Path]:
    from PIL import Image as PILImage

    png, mtl = texture_png_path(path), path.with_suffix(".mtl")
    image = np.ascontiguousarray(texture.image)
    written = [atomic_write(png, lambda tmp: PILImage.fromarray(image).save(tmp, format="PNG"))]
    material = "_".join(path.stem.split()) or "albedo"  # OBJ names end at a space
    mtl_text = (f"# DreamFusion for Blender\nnewmtl {material}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
                f"map_Kd {png.name}\n")
    written.append(atomic_write(mtl, lambda tmp: Path(tmp).write_text(mtl_text, encoding="utf-8")))
    # OBJ indexes positions and UVs separately: the mesh stays welded across the UV seams.
    uv_rows, uv_index = np.unique(np.ascontiguousarray(texture.uvs, np.float32), axis=0, return_inverse=True)
    positions = to_y_up(mesh.positions.astype(np.float64))
    colours = mesh.colors[:, :3] / 255.0
    corners = np.stack([mesh.triangles.reshape(-1).astype(np.int64) + 1, uv_index.reshape(-1) + 1], axis=1)
    text = "".join([f"# DreamFusion for Blender\nmtllib {mtl.name}\no {material}\n",
                    _lines("v %.6f %.6f %.6f %.4f %.4f %.4f", np.concatenate([positions, colours], axis=1)),
                    _lines("vt %.6f %.6f", uv_rows.astype(np.float64)),
                    f"usemtl {material}\ns 1\n",
                    _lines("f %d/%d %d/%d %d/%d", corners.reshape(-1, 6))])
    mesh_file = atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [mesh_file, *written]


def _lines(fmt: str, rows: np.ndarray) -> str:
    import io

    out = io.StringIO()
    np.savetxt(out, rows, fmt=fmt)
    return out.getvalue()
