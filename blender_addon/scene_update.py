"""Streamed meshes into the scene: one object per job, geometry replaced in place.

Only `foreach_set` on flat numpy arrays touches the mesh, so a 100k-vertex
update costs tens of milliseconds, and the job's one mesh datablock is reused
(no orphan per update). Colours go into a BYTE_COLOR point attribute
`albedo` in sRGB, which is exactly what the wire carries. A job whose
geometry is locked gets colour-only updates: those rewrite the attribute
alone (`set_colors`), a fraction of a whole update.

A refinement's object is made when its button is pressed (`new_refined_object`:
a copy of its source's evaluated mesh at the source's place, tagged until the
backend names the job); meshes arrive in the job's frame and are written in
the object's local coordinates (`addon_core.refine.to_local`).
"""

from __future__ import annotations

import json
import os

import bpy
import numpy as np
from mathutils import Matrix

from .addon_core.glb import glb_vertex_count
from .addon_core.refine import IDENTITY, to_local

COLLECTION = "DreamFusion"
MATERIAL = "DreamFusion Albedo"
ATTRIBUTE = "albedo"
UV_MAP = "UVMap"
#: A finished job's baked texture: its material is "DreamFusion <job id>", its image that + " albedo" (the
#: history's thumbnail has the material's name).
TEXTURE_PREFIX = "DreamFusion "
IMAGE_SUFFIX = " albedo"
JOB_PROPERTY = "dreamfusion_job_id"
#: A refinement's object: the job it continues, or the object whose mesh it started from.
PARENT_PROPERTY = "dreamfusion_parent_job"
SOURCE_PROPERTY = "dreamfusion_source_object"
#: Its job's frame (16 floats, row-major; see addon_core.refine), when not the identity.
FRAME_PROPERTY = "dreamfusion_frame"
#: Set when the object holds the artist's own mesh and takes only colours.
KEEP_PROPERTY = "dreamfusion_keep_geometry"
#: A refinement's object before the backend has named its job: the submit's token.
PENDING_PROPERTY = "dreamfusion_pending"
#: A best-of-N candidate's object: its job, its index and seed (and score, once judged). Not JOB_PROPERTY: the
#: job's own object is another.
CANDIDATE_JOB_PROPERTY = "dreamfusion_candidate_of"
CANDIDATE_PROPERTY = "dreamfusion_candidate"
CANDIDATE_SEED_PROPERTY = "dreamfusion_candidate_seed"
CANDIDATE_SCORE_PROPERTY = "dreamfusion_candidate_score"
#: Candidates stand in a row beside their job's place, this far apart along X (metres; a toy object is ~1 m).
CANDIDATE_SPACING = 1.5


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


def job_object(job_id: str, known: bpy.types.Object | None = None) -> bpy.types.Object | None:
    """The job's mesh object: `known` (the job list's pointer) if it still is, else found by job id."""
    obj = known if known is not None and known.get(JOB_PROPERTY) == job_id else find_object(job_id)
    return obj if obj is not None and obj.type == "MESH" else None


def ensure_object(scene: bpy.types.Scene, job_id: str, prompt: str, known: bpy.types.Object | None = None,
                  collection: bpy.types.Collection | None = None, frame=IDENTITY,
                  properties: dict | None = None) -> bpy.types.Object:
    """The job's object (`job_object`), else made (in `collection`, by default the scene's "DreamFusion"
    collection) at its frame's place, carrying `properties`: a refinement's object the artist deleted comes
    back where its mesh belongs."""
    obj = job_object(job_id, known)
    if obj is not None:
        return obj
    mesh = bpy.data.meshes.new(object_name(prompt))
    obj = bpy.data.objects.new(object_name(prompt), mesh)
    obj[JOB_PROPERTY] = job_id
    for name, value in (properties or {}).items():
        obj[name] = value
    if tuple(frame) != IDENTITY:
        obj.matrix_world = _matrix(frame)
    (collection or ensure_collection(scene)).objects.link(obj)
    mesh.materials.append(ensure_material())
    _make_bases(scene)
    return obj


def _make_bases(scene: bpy.types.Scene) -> None:
    # View layers make an object's base lazily; do it now (the object is new, so this is cheap) so that
    # clicking the job in the list can select the object even before Blender redraws.
    for layer in scene.view_layers:
        layer.update()


def _matrix(frame) -> Matrix:
    values = [float(v) for v in frame]
    return Matrix([values[0:4], values[4:8], values[8:12], values[12:16]])


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
    _write_albedo(_albedo_attribute(mesh), colors)
    mesh.update()
    if hasattr(mesh, "shade_smooth"):  # marching-cubes facets look like noise when flat shaded (4.1+)
        mesh.shade_smooth()


def set_colors(mesh: bpy.types.Mesh, colors: np.ndarray) -> bool:
    """Rewrite only the albedo (colors N x 4 uint8, one per vertex in the mesh's order); the geometry is left
    alone. False, and nothing written, when the mesh does not have exactly N vertices."""
    if len(colors) != len(mesh.vertices):
        return False
    _write_albedo(_albedo_attribute(mesh), colors)
    mesh.update_tag()  # only the attribute changed: no normals or topology to recompute, as mesh.update() would
    return True


def _albedo_attribute(mesh: bpy.types.Mesh):
    """The mesh's `albedo` point byte-colour attribute, made (and made the displayed one) if missing.
    clear_geometry() drops colour attributes, so after a geometry write it is always made afresh."""
    albedo = mesh.color_attributes.get(ATTRIBUTE)
    if albedo is not None and (albedo.domain, albedo.data_type) != ("POINT", "BYTE_COLOR"):
        mesh.color_attributes.remove(albedo)
        albedo = None
    if albedo is None:
        albedo = mesh.color_attributes.new(ATTRIBUTE, "BYTE_COLOR", "POINT")
    mesh.color_attributes.active_color_name = ATTRIBUTE   # Solid mode's "Attribute" colour
    mesh.color_attributes.default_color_name = ATTRIBUTE  # what renders use
    return albedo


def _write_albedo(albedo, colors: np.ndarray) -> None:
    # Byte colours are stored as sRGB; c / 255 round-trips exactly to the wire's uint8 values.
    albedo.data.foreach_set("color_srgb", (np.asarray(colors, np.float32) / 255.0).ravel())


def apply_mesh(scene: bpy.types.Scene, job_id: str, prompt: str, mesh_data, step: int, model: str,
               spec_json: str = "", known: bpy.types.Object | None = None,
               collection: bpy.types.Collection | None = None, frame=IDENTITY,
               properties: dict | None = None) -> bpy.types.Object:
    """Write a whole mesh (in the job's `frame`, see addon_core.refine) into the job's object."""
    obj = ensure_object(scene, job_id, prompt, known, collection, frame, properties)
    set_geometry(obj.data, to_local(mesh_data.positions, frame), mesh_data.triangles, mesh_data.colors)
    _tag(obj, step, model, spec_json)
    return obj


def candidate_objects(job_id: str) -> dict[int, bpy.types.Object]:
    """The job's best-of-N candidate objects, by candidate index."""
    return {int(obj[CANDIDATE_PROPERTY]): obj for obj in bpy.data.objects
            if obj.get(CANDIDATE_JOB_PROPERTY) == job_id and CANDIDATE_PROPERTY in obj}


def candidate_name(prompt: str, index: int, seed: int) -> str:
    return f"{object_name(prompt)} · candidate {index} (seed {seed})"


def apply_candidate_mesh(scene: bpy.types.Scene, job_id: str, prompt: str, index: int, seed: int, mesh_data,
                         step: int, frame=IDENTITY) -> bpy.types.Object:
    """Write a candidate's mesh into its object, made on its first mesh in the row beside the job's place
    (candidate i at (i + 1) CANDIDATE_SPACING along X of the job's frame), named with its index and seed."""
    obj = candidate_objects(job_id).get(index)
    if obj is None:
        name = candidate_name(prompt, index, seed)
        obj = bpy.data.objects.new(name, bpy.data.meshes.new(name))
        obj[CANDIDATE_JOB_PROPERTY], obj[CANDIDATE_PROPERTY] = job_id, index
        obj[CANDIDATE_SEED_PROPERTY] = str(seed)  # ID properties hold 32-bit signed integers; seeds go to 2^32 - 1
        obj.matrix_world = _matrix(frame) @ Matrix.Translation(((index + 1) * CANDIDATE_SPACING, 0.0, 0.0))
        ensure_collection(scene).objects.link(obj)
        obj.data.materials.append(ensure_material())
        _make_bases(scene)
    set_geometry(obj.data, to_local(mesh_data.positions, frame), mesh_data.triangles, mesh_data.colors)
    obj["dreamfusion_step"] = int(step)
    return obj


def settle_candidates(job_id: str, chosen: int, scores: list[float], keep: bool) -> bpy.types.Mesh | None:
    """The choice is made: every candidate object learns its score; the unchosen ones are removed (or hidden,
    when `keep`); the chosen one's object goes and its mesh is returned for the job's object to take."""
    mesh = None
    for index, obj in candidate_objects(job_id).items():
        if index < len(scores):
            obj[CANDIDATE_SCORE_PROPERTY] = float(scores[index])
            obj.name = f"{obj.name} score {scores[index]:+.3f}"  # the label an artist sees in the outliner
        if index == chosen:
            mesh = obj.data
            bpy.data.objects.remove(obj)
        elif keep:
            obj.hide_set(True)
            obj.hide_render = True
        else:
            data = obj.data
            bpy.data.objects.remove(obj)
            if data.users == 0:
                bpy.data.meshes.remove(data)
    return mesh


def take_mesh(obj: bpy.types.Object, mesh: bpy.types.Mesh) -> None:
    """The job's object takes a chosen candidate's mesh datablock as its own (its old one goes when unused)."""
    old = obj.data
    mesh.name = obj.name
    obj.data = mesh
    if not mesh.materials:
        mesh.materials.append(ensure_material())
    if old is not None and old is not mesh and old.users == 0:
        bpy.data.meshes.remove(old)


def apply_colors(obj: bpy.types.Object, colors: np.ndarray, step: int, model: str = "", spec_json: str = "") -> bool:
    """Write only new vertex colours into the job's object; False (nothing written) when its vertex count
    differs from the colours' (the artist edited it, or it is not the mesh the job started from)."""
    if not set_colors(obj.data, colors):
        return False
    _tag(obj, step, model, spec_json)
    return True


def _tag(obj: bpy.types.Object, step: int, model: str, spec_json: str) -> None:
    # What the object says about its job, wherever it goes (another file, an export): step, model, JobSpec.
    obj["dreamfusion_step"] = int(step)
    if model:
        obj["dreamfusion_model"] = model
    if spec_json:
        obj["dreamfusion_spec"] = spec_json


def new_refined_object(scene: bpy.types.Scene, prompt: str, source: bpy.types.Object, depsgraph,
                       properties: dict, colors: np.ndarray | None = None) -> bpy.types.Object:
    """A refinement's object, made at once: a copy of `source`'s evaluated mesh (modifiers applied: the mesh the
    job starts from, vertex for vertex) with `source`'s matrix_world, in the DreamFusion collection, carrying
    `properties`; `colors` (one per vertex) become its albedo. `source` is not changed."""
    mesh = bpy.data.meshes.new_from_object(source.evaluated_get(depsgraph), preserve_all_data_layers=True,
                                           depsgraph=depsgraph)
    mesh.name = object_name(prompt)
    mesh.materials.clear()
    mesh.materials.append(ensure_material())
    obj = bpy.data.objects.new(object_name(prompt), mesh)
    for name, value in properties.items():
        obj[name] = value
    obj.matrix_world = source.matrix_world.copy()
    ensure_collection(scene).objects.link(obj)
    if colors is not None:
        set_colors(mesh, colors)
    elif ATTRIBUTE in mesh.color_attributes:  # a result's copy: keep showing its albedo
        _albedo_attribute(mesh)
    _make_bases(scene)
    return obj


def pending_object(token: str) -> bpy.types.Object | None:
    """The refinement object made for the submit tagged `token` (None once Undo took it away)."""
    for obj in bpy.data.objects:
        if obj.get(PENDING_PROPERTY) == token:
            return obj
    return None


def claim_pending(token: str, job_id: str) -> bpy.types.Object | None:
    """The backend named the job: the object tagged `token` becomes that job's object."""
    obj = pending_object(token)
    if obj is not None:
        obj[JOB_PROPERTY] = job_id
        del obj[PENDING_PROPERTY]
    return obj


def discard_pending(token: str, source_name: str = "") -> None:
    """A refused (or never sent) refinement: remove its object and its mesh, and show its source again."""
    obj = pending_object(token)
    if obj is not None:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
    source = bpy.data.objects.get(source_name) if source_name else None
    if source is not None:
        for layer in bpy.context.scene.view_layers if bpy.context.scene else ():
            if source.name in layer.objects:
                source.hide_set(False, view_layer=layer)


def apply_texture(obj: bpy.types.Object, job_id: str, uvs: np.ndarray, png: bytes) -> bool:
    """Give a finished job's object its baked texture: the UV map (`uvs`, one per corner, in the order of the
    triangles its mesh was written with), the image (PNG bytes, packed into the .blend, named after the job)
    and a material showing it, with the vertex albedo kept as a colour attribute (and as a node in the material
    to switch to). False, and nothing changed, when the mesh's corners do not match the UVs."""
    mesh = obj.data
    if len(mesh.loops) != len(uvs) or len(mesh.polygons) * 3 != len(uvs):
        return False
    layer = mesh.uv_layers.get(UV_MAP) or mesh.uv_layers.new(name=UV_MAP)
    layer.data.foreach_set("uv", np.ascontiguousarray(uvs, np.float32).ravel())
    mesh.uv_layers.active = layer
    name = TEXTURE_PREFIX + job_id
    image = bpy.data.images.get(name + IMAGE_SUFFIX)
    if image is not None:  # a result fetched again: replace it, nothing else uses the name
        bpy.data.images.remove(image)
    image = bpy.data.images.new(name + IMAGE_SUFFIX, 1, 1)
    image.source = "FILE"
    image.filepath = f"//{bpy.path.clean_name(image.name)}.png"  # where File > External Data > Unpack would put it
    image.pack(data=png, data_len=len(png))  # decoded lazily, when first drawn
    material = _texture_material(name, image)
    mesh.materials.clear()
    mesh.materials.append(material)
    mesh.update_tag()
    return True


def _texture_material(name: str, image) -> bpy.types.Material:
    material = bpy.data.materials.get(name)
    if material is not None:
        bpy.data.materials.remove(material)
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.8
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.location = (bsdf.location.x - 320, bsdf.location.y)
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = UV_MAP
    uv.location = (texture.location.x - 220, texture.location.y - 60)
    links.new(uv.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    # The vertex albedo stays one link away: connect this node to Base Color to see it instead.
    colour = nodes.new("ShaderNodeVertexColor")
    colour.layer_name = ATTRIBUTE
    colour.label = "Vertex albedo"
    colour.location = (texture.location.x, texture.location.y - 320)
    return material


def textured_image(obj: bpy.types.Object):
    """The baked texture image of a finished job's object, or None (it has vertex colours only)."""
    material = obj.active_material
    if material is None or material.node_tree is None:
        return None
    node = next((n for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None), None)
    return node.image if node is not None else None


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True) if spec is not None else ""


def export_glb(context, obj: bpy.types.Object, path: str) -> int:
    """Write `obj` alone to a .glb (Blender's glTF exporter) and return the vertices the file holds: with its baked
    texture as baseColorTexture when it has one, else its albedo as COLOR_0 (never both: glTF multiplies the two).

    Whether the object is selected, hidden, disabled in viewports or in an excluded collection does not matter:
    the exporter is pointed at a temporary collection holding only `obj` (its selection filter would otherwise
    quietly write an empty file for a result a refinement had hidden). RuntimeError when the exporter fails or
    the file it wrote holds no mesh (the file is then removed, so nothing empty is left looking like a result)."""
    if obj.type != "MESH" or obj.data is None or not len(obj.data.vertices):
        raise RuntimeError(f"{obj.name!r} has no mesh to export (its job has sent none yet)")
    scene = context.scene
    holder = bpy.data.collections.new("DreamFusion export")
    holder.objects.link(obj)
    scene.collection.children.link(holder)  # in the scene's depsgraph even where its own collection is excluded
    # Only this scene and only the holder's objects: by default the exporter walks every scene, and an object
    # linked into two (batch mode keeps its results in a second scene) would come out twice.
    options = {"filepath": path, "export_format": "GLB", "use_selection": False, "use_visible": False,
               "use_renderable": False, "use_active_scene": True, "collection": holder.name}
    try:
        try:  # Blender 4.2+ names the option; older glTF exporters take colours from the material
            bpy.ops.export_scene.gltf(**options, export_vertex_color="NONE" if textured_image(obj) else "ACTIVE")
        except TypeError:
            bpy.ops.export_scene.gltf(**options)
    finally:
        scene.collection.children.unlink(holder)
        bpy.data.collections.remove(holder)
    try:
        with open(path, "rb") as f:
            vertices = glb_vertex_count(f.read())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"the exporter wrote no readable .glb: {exc}") from None
    if vertices == 0:
        os.remove(path)
        raise RuntimeError(f"the exporter wrote no mesh for {obj.name!r}; the empty file was removed")
    return vertices
