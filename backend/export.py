"""Write meshes so Blender's default importers open them upright and correctly coloured: each format's
conventions (which are Y-up, which keep linear vertex colours, which carry a texture) are declared in
`shared/formats.py`.

A final result with a texture (`export_result`): .glb embeds it as the material's baseColorTexture
(backend/gltf_textured.py); .obj gets a .mtl and a .png beside it (map_Kd) and keeps its vertex colours;
.ply cannot carry a texture and stays vertex colours only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blender_dreamfusion.shared import MeshData, Texture
from blender_dreamfusion.shared.atomic import atomic_write
from blender_dreamfusion.shared.formats import MESH_FORMATS, no_texture_note, srgb_to_linear, to_y_up, written_format


def export_mesh(mesh: MeshData, path: str | Path) -> Path:
    """Write `mesh` in the format its suffix names (`shared/formats.py`), atomically."""
    import trimesh

    path = Path(path)
    form = written_format(path.name)
    suffix = form.suffix
    positions = mesh.positions.astype(np.float64)
    colors = np.array(mesh.colors)
    if form.y_up:
        positions = to_y_up(positions)
    if form.linear_colours:
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
    form = written_format(path.name)
    if texture is None or not form.textures or not mesh.triangle_count:
        return [export_mesh(mesh, path)]
    if form.suffix == ".glb":
        from .gltf_textured import textured_glb

        linear = np.concatenate([srgb_to_linear(mesh.colors[:, :3] / 255.0), mesh.colors[:, 3:] / 255.0], axis=1)
        data = textured_glb(mesh, texture, to_y_up(mesh.positions.astype(np.float64)), linear, path.stem)
        return [atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))]
    return _textured_obj(mesh, texture, path)


def lost_texture_note(path: Path, texture: Texture | None) -> str | None:
    """What to tell the user when `texture` did not go into `path` because its format has none (else None)."""
    form = written_format(path.name)
    return no_texture_note(form.suffix) if texture is not None and not form.textures else None


def texture_png_path(path: Path) -> Path:
    """Where a textured .obj's albedo image goes: beside it, `<stem>_albedo.png` (its companion)."""
    return path.with_name(path.stem + MESH_FORMATS[".obj"].companions[1])


def _textured_obj(mesh: MeshData, texture: Texture, path: Path) -> list[Path]:
    from PIL import Image as PILImage

    png, mtl = texture_png_path(path), path.with_suffix(MESH_FORMATS[".obj"].companions[0])
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
