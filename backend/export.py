"""Write meshes with vertex colours so Blender's default importers open them upright and correctly coloured.

.glb and .obj are Y-up (the glTF spec; Blender's OBJ import default), so
Blender's Z-up frame is rotated on the way out: (x, y, z) -> (x, z, -y).
.ply stays Z-up (Blender's PLY import default). glTF vertex colours are
linear by the spec, so our sRGB albedo is converted for .glb; .ply and .obj
carry sRGB, which is how Blender reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blender_dreamfusion.shared import MeshData

from blender_dreamfusion.shared.atomic import atomic_write

FORMATS = (".glb", ".obj", ".ply")


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
