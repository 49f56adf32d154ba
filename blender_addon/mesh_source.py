"""Meshes from Blender onto the wire: an object's evaluated mesh as a start mesh, and mesh files read with
Blender's own importers (the batch's `init_mesh`).

A start mesh is what the artist sees: modifiers applied (the depsgraph's evaluated mesh), triangulated
(`loop_triangles`), in world space (matrix_world), with the object's colour attribute when it has one, else
mid grey. Everything is read with `foreach_get` into numpy: 100k triangles take tens of milliseconds
(`bench/blender_apply.py` measures it).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from .addon_core.refine import flat_matrix, start_mesh, transform
from .shared.formats import READABLE, read_format
from .shared.mesh import MeshData

#: What an import may add to the file; all of it goes again once the mesh is read.
_IMPORTED_KINDS = ("objects", "meshes", "materials", "images", "textures", "node_groups", "collections", "actions",
                   "cameras", "lights", "armatures", "curves", "worlds")


def world_mesh(objects, depsgraph, field: str = "init_mesh") -> MeshData:
    """The evaluated meshes of `objects`, triangulated, in world space, as one start mesh. BadBuffer naming
    `field` when it is empty, has too many triangles or no extent (shared.mesh.check_init_mesh)."""
    return world_mesh_with_uvs(objects, depsgraph, field)[0]


def world_mesh_with_uvs(objects, depsgraph, field: str = "init_mesh") -> tuple[MeshData, np.ndarray | None]:
    """`world_mesh`, and its active UV map per triangle corner ((3M) x 2 float32), or None when any of the
    objects has no UV map."""
    positions, triangles, colors, uvs, offset = [], [], [], [], 0
    for obj in objects:
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()  # colour attributes come along; preserve_all_data_layers would cost a copy
        try:
            p, t, c, uv = _read(mesh)
        finally:
            evaluated.to_mesh_clear()
        positions.append(transform(p, flat_matrix(evaluated.matrix_world)))
        triangles.append(t + offset)
        colors.append(c)
        uvs.append(uv)
        offset += len(p)
    if not positions:
        return start_mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), field=field), None
    mesh = start_mesh(np.concatenate(positions), np.concatenate(triangles), np.concatenate(colors), field=field)
    return mesh, (np.concatenate(uvs) if all(uv is not None for uv in uvs) else None)


def _read(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(local positions N x 3, triangles M x 3, sRGB colours N x 4 uint8, active UVs per triangle corner
    (3M) x 2 or None) of a mesh."""
    n = len(mesh.vertices)
    positions = np.empty(n * 3, np.float32)
    if n:  # an empty mesh has no position attribute at all
        mesh.attributes["position"].data.foreach_get("vector", positions)
    mesh.calc_loop_triangles()
    triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    uvs = None
    layer = mesh.uv_layers.active
    if layer is not None and len(mesh.loop_triangles):
        loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        per_loop = np.empty(len(mesh.loops) * 2, np.float32)
        layer.data.foreach_get("uv", per_loop)
        uvs = np.ascontiguousarray(per_loop.reshape(-1, 2)[loops])
        if not np.isfinite(uvs).all():
            uvs = None
    return positions.reshape(-1, 3), triangles.reshape(-1, 3), _vertex_colors(mesh, n), uvs


def _vertex_colors(mesh: bpy.types.Mesh, n: int) -> np.ndarray:
    """The colour attribute renders use (else the displayed one), per vertex as sRGB uint8; corner colours are
    averaged over each vertex's corners. Mid grey when there is none."""
    attributes = mesh.color_attributes
    attribute = attributes.get(attributes.default_color_name or "") or attributes.active_color
    out = np.empty((n, 4), np.uint8)
    out[:] = (128, 128, 128, 255)
    if attribute is None or attribute.domain not in ("POINT", "CORNER") or n == 0:
        return out
    values = np.empty(len(attribute.data) * 4, np.float32)
    attribute.data.foreach_get("color_srgb", values)
    values = values.reshape(-1, 4)
    if attribute.domain == "CORNER":
        corners = np.empty(len(mesh.loops), np.int32)
        if ".corner_vert" in mesh.attributes:  # the raw attribute: far faster than loops' vertex_index
            mesh.attributes[".corner_vert"].data.foreach_get("value", corners)
        else:
            mesh.loops.foreach_get("vertex_index", corners)
        counts = np.bincount(corners, minlength=n)
        summed = np.stack([np.bincount(corners, values[:, k], minlength=n) for k in range(4)], axis=1)
        used = counts > 0
        values = np.full((n, 4), 128 / 255, np.float64)
        values[:, 3] = 1.0
        values[used] = summed[used] / counts[used, None]
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def import_mesh_file(path: str | Path, field: str = "init_mesh") -> MeshData:
    """Every mesh in a .glb/.gltf/.obj/.ply file, read with Blender's importer into a scene of its own, as one
    world-frame start mesh; whatever the import made is removed again, so the open file is as it was.
    ValueError naming `field` for a file that holds no mesh or that Blender cannot import."""
    path = Path(path)
    form = read_format(path.name)
    if form is None:
        raise ValueError(f"{field} = {str(path)!r}: not a mesh file Blender imports here; allowed: "
                         f"{', '.join(sorted(READABLE))}")
    importer = form.blender_importer  # glTF is a bundled add-on, OBJ and PLY are built in
    before = {kind: set(getattr(bpy.data, kind)) for kind in _IMPORTED_KINDS}
    scene = bpy.data.scenes.new("DreamFusion import")
    try:
        layer = scene.view_layers[0]
        with bpy.context.temp_override(scene=scene, view_layer=layer, collection=scene.collection):
            operator = getattr(getattr(bpy.ops, importer[0]), importer[1])
            try:
                result = operator(filepath=str(path))
            except RuntimeError as exc:  # the importer's own report: a broken or unsupported file
                reason = str(exc).strip()
                raise ValueError(f"{field} = {str(path)!r}: Blender could not import it ({reason})") from None
            if "FINISHED" not in result:
                raise ValueError(f"{field} = {str(path)!r}: Blender could not import it ({sorted(result)})")
            objects = [obj for obj in scene.objects if obj.type == "MESH"]
            if not objects:
                raise ValueError(f"{field} = {str(path)!r}: the file holds no mesh")
            return world_mesh(objects, bpy.context.evaluated_depsgraph_get(), field=f"{field} {path.name}")
    finally:
        bpy.data.scenes.remove(scene)
        made = [block for kind in _IMPORTED_KINDS for block in getattr(bpy.data, kind) if block not in before[kind]]
        if made:
            bpy.data.batch_remove(made)
