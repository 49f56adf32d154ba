"""Exported meshes open upright and coloured in Blender's default importers (real bpy)."""

from __future__ import annotations

import numpy as np
import pytest

from blender_dreamfusion.backend.export import export_mesh
from blender_dreamfusion.shared import MeshData

bpy = pytest.importorskip("bpy")

COLOUR = (200, 40, 10)


def cone(n: int = 24) -> MeshData:
    """Apex at +Z (0, 0, 1), base circle of radius 0.5 at z = 0, one colour."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    base = np.stack([0.5 * np.cos(angles), 0.5 * np.sin(angles), np.zeros(n)], 1)
    positions = np.vstack([base, [[0, 0, 1.0]], [[0, 0, 0]]])
    triangles = [[i, (i + 1) % n, n] for i in range(n)] + [[(i + 1) % n, i, n + 1] for i in range(n)]
    colours = np.tile(np.array([[*COLOUR, 255]], np.uint8), (len(positions), 1))
    return MeshData.coerce(positions, np.array(triangles), colours)


IMPORTERS = {
    ".glb": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".obj": lambda path: bpy.ops.wm.obj_import(filepath=path),
    ".ply": lambda path: bpy.ops.wm.ply_import(filepath=path),
}


@pytest.mark.parametrize("suffix", sorted(IMPORTERS))
def test_apex_points_to_plus_z_and_colours_survive(suffix, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = export_mesh(cone(), tmp_path / f"cone{suffix}")
    IMPORTERS[suffix](str(path))
    objects = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert len(objects) == 1
    obj = objects[0]
    points = np.array([tuple(obj.matrix_world @ v.co) for v in obj.data.vertices])
    apex = points[np.argmax(points[:, 2])]
    assert np.allclose(apex, [0, 0, 1], atol=1e-5)
    assert np.allclose(points[:, 2].min(), 0.0, atol=1e-5)
    assert np.allclose(np.ptp(points[:, 0]), 1.0, atol=1e-3) and np.allclose(np.ptp(points[:, 1]), 1.0, atol=0.05)
    attribute = obj.data.color_attributes[0]
    srgb = np.array([tuple(d.color_srgb)[:3] for d in attribute.data]) * 255
    assert np.abs(srgb - COLOUR).max() <= 4  # glTF's linear 8-bit storage costs a few levels in the darks


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.glb, \.obj, \.ply"):
        export_mesh(cone(), tmp_path / "cone.fbx")


def test_written_files_are_ordinary_files(tmp_path):
    import os
    import stat

    path = export_mesh(cone(), tmp_path / "cone.ply")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["cone.ply"]
