"""Streamed meshes into the scene: one object per job, geometry replaced in place.

Only `foreach_set` on flat numpy arrays touches the mesh, so a 100k-vertex
update costs tens of milliseconds, and the job's one mesh datablock is reused
(no orphan per update). Colours go into a BYTE_COLOR point attribute
`albedo` in sRGB, which is exactly what the wire carries.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

COLLECTION = "DreamFusion"
MATERIAL = "DreamFusion Albedo"
ATTRIBUTE = "albedo"
JOB_PROPERTY = "dreamfusion_job_id"


def object_name(prompt: str) -> str:
    words = " ".join(prompt.split())[:48]
    return words or "DreamFusion"


def ensure_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(COLLECTION)
    if collection is None:
        collection = bpy.data.collections.new(COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def ensure_material() -> bpy.types.Material:
    material = bpy.data.materials.get(MATERIAL)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL)
    if bpy.app.version < (5, 0, 0):  # 5.0 always uses nodes (and deprecates the switch)
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    colour = nodes.new("ShaderNodeVertexColor")
    colour.layer_name = ATTRIBUTE
    colour.location = (bsdf.location.x - 300, bsdf.location.y)
    links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    return material


def find_object(job_id: str) -> bpy.types.Object | None:
    for obj in bpy.data.objects:
        if obj.get(JOB_PROPERTY) == job_id:
            return obj
    return None


def ensure_object(scene: bpy.types.Scene, job_id: str, prompt: str, known: bpy.types.Object | None = None,
                  collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """The job's object: `known` (the job list's pointer) if it still is, else found by job id, else made
    (in `collection`, by default the scene's "DreamFusion" collection)."""
    obj = known if known is not None and known.get(JOB_PROPERTY) == job_id else find_object(job_id)
    if obj is not None and obj.type == "MESH":
        return obj
    mesh = bpy.data.meshes.new(object_name(prompt))
    obj = bpy.data.objects.new(object_name(prompt), mesh)
    obj[JOB_PROPERTY] = job_id
    (collection or ensure_collection(scene)).objects.link(obj)
    mesh.materials.append(ensure_material())
    # View layers make an object's base lazily; do it now (the object is still empty, so this is cheap)
    # so that clicking the job in the list can select the object even before Blender redraws.
    for layer in scene.view_layers:
        layer.update()
    return obj


def set_geometry(mesh: bpy.types.Mesh, positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> None:
    """Replace `mesh`'s geometry and albedo in place (positions N x 3 float, triangles M x 3 int, colors N x 4 uint8)."""
    n, m = len(positions), len(triangles)
    mesh.clear_geometry()
    mesh.vertices.add(n)
    mesh.loops.add(3 * m)
    mesh.polygons.add(m)
    mesh.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(positions, np.float32).ravel())
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * m, 3, dtype=np.int32))
    corners = np.ascontiguousarray(triangles, np.int32).ravel()
    if ".corner_vert" in mesh.attributes:  # the raw attribute: ~100x faster than loops' vertex_index
        mesh.attributes[".corner_vert"].data.foreach_set("value", corners)
    else:
        mesh.loops.foreach_set("vertex_index", corners)
    albedo = mesh.color_attributes.new(ATTRIBUTE, "BYTE_COLOR", "POINT")
    # Byte colours are stored as sRGB; c / 255 round-trips exactly to the wire's uint8 values.
    albedo.data.foreach_set("color_srgb", (np.asarray(colors, np.float32) / 255.0).ravel())
    mesh.color_attributes.active_color_name = ATTRIBUTE   # Solid mode's "Attribute" colour
    mesh.color_attributes.default_color_name = ATTRIBUTE  # what renders use
    mesh.update()
    if hasattr(mesh, "shade_smooth"):  # marching-cubes facets look like noise when flat shaded (4.1+)
        mesh.shade_smooth()


def apply_mesh(scene: bpy.types.Scene, job_id: str, prompt: str, mesh_data, step: int, model: str,
               spec_json: str = "", known: bpy.types.Object | None = None,
               collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    obj = ensure_object(scene, job_id, prompt, known, collection)
    set_geometry(obj.data, mesh_data.positions, mesh_data.triangles, mesh_data.colors)
    obj["dreamfusion_step"] = int(step)
    obj["dreamfusion_model"] = model
    if spec_json:
        obj["dreamfusion_spec"] = spec_json
    return obj


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True) if spec is not None else ""


def export_glb(context, obj: bpy.types.Object, path: str) -> None:
    """Write `obj` alone, with its albedo as COLOR_0, to a .glb (Blender's glTF exporter; RuntimeError if it fails)."""
    view_layer = context.view_layer
    previous = [o for o in view_layer.objects if o.select_get()]
    for other in previous:
        other.select_set(False)
    obj.select_set(True)
    # Only this scene: by default the exporter walks every scene, and an object linked into two (batch mode
    # keeps its results in a second scene) would come out twice, alongside whatever is selected there.
    options = {"filepath": path, "export_format": "GLB", "use_selection": True, "use_active_scene": True}
    try:
        try:  # Blender 4.2+ names the option; older glTF exporters take colours from the material
            bpy.ops.export_scene.gltf(**options, export_vertex_color="ACTIVE")
        except TypeError:
            bpy.ops.export_scene.gltf(**options)
    finally:
        obj.select_set(False)
        for other in previous:
            other.select_set(True)
