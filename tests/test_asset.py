"""Final assets (backend/asset, backend/export.export_result): decimation, smoothing, UV atlas, bake, and the
textured .glb / .obj + .mtl + .png as Blender's own importers read them (real bpy)."""

from __future__ import annotations

import json
import struct

import mcubes
import numpy as np
import pytest
import trimesh

from blender_dreamfusion.backend.asset import finish_asset
from blender_dreamfusion.backend.asset.atlas import uv_atlas
from blender_dreamfusion.backend.asset.bake import bake, rasterise, sample
from blender_dreamfusion.backend.asset.cleanup import decimate, smooth
from blender_dreamfusion.backend.export import export_result, texture_png_path
from blender_dreamfusion.backend.mesh_metrics import bounding_diagonal, chamfer
from blender_dreamfusion.shared import JobSpec, MeshData, Texture

bpy = pytest.importorskip("bpy")

SIZE = 512


def albedo_at(points: np.ndarray) -> np.ndarray:
    """A smooth colour field with detail in every direction (sRGB uint8 RGBA)."""
    p = np.asarray(points, np.float64)
    rgb = np.stack([128 + 100 * np.sin(4 * p[:, 0]), 128 + 100 * np.sin(5 * p[:, 1] + 1),
                    128 + 100 * np.cos(3 * p[:, 2])], axis=1)
    return np.concatenate([np.round(rgb), np.full((len(p), 1), 255)], axis=1).astype(np.uint8)


@pytest.fixture(scope="module")
def shape() -> MeshData:
    """A closed marching-cubes mesh like an extraction's: a rounded box fused with a sphere, ~22k triangles."""
    n = 96
    axis = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    q = np.abs(np.stack([x, y, z + 0.15])) - np.array([0.45, 0.3, 0.3])[:, None, None, None]
    box = np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(axis=0), 0) - 0.05
    ball = np.sqrt(x**2 + y**2 + (z - 0.35) ** 2) - 0.3
    vertices, faces = mcubes.marching_cubes(-np.minimum(box, ball), 0.0)
    positions = vertices * (2.0 / (n - 1)) - 1.0
    return MeshData.coerce(positions, faces, albedo_at(positions))


def _closed(mesh: MeshData) -> bool:
    return trimesh.Trimesh(mesh.positions, mesh.triangles, process=False).is_watertight


def test_decimation_hits_the_face_count_stays_closed_and_keeps_the_shape(shape):
    assert _closed(shape) and shape.triangle_count > 20_000
    for target in (8000, 3000):
        positions, triangles = decimate(shape.positions, shape.triangles, target)
        small = MeshData.coerce(positions, triangles)
        assert abs(small.triangle_count - target) <= 0.05 * target, (target, small.triangle_count)
        assert _closed(small), target
        assert chamfer(small, shape) < 0.005 * bounding_diagonal(shape), target
    # At or under the count, nothing changes.
    positions, triangles = decimate(shape.positions, shape.triangles, shape.triangle_count + 10)
    assert len(triangles) == shape.triangle_count


def test_taubin_smoothing_does_not_shrink_the_shape(shape):
    before = trimesh.Trimesh(shape.positions, shape.triangles, process=False)
    after = trimesh.Trimesh(smooth(shape.positions, shape.triangles, 20), shape.triangles, process=False)
    assert abs(after.volume / before.volume - 1) < 0.01
    assert np.abs(after.bounds - before.bounds).max() < 0.01
    assert after.is_watertight
    # It does smooth: the staircase of marching cubes shows as spread in the face normals' turn between
    # neighbours, which drops.
    def roughness(mesh):
        normals = mesh.face_normals[mesh.face_adjacency]
        return float(np.mean(1 - np.einsum("ij,ij->i", normals[:, 0], normals[:, 1])))
    assert roughness(after) < 0.7 * roughness(before)


@pytest.fixture(scope="module")
def textured(shape):
    spec = JobSpec(prompt="x", seed=0, face_count=6000, texture_size=SIZE)
    asset = finish_asset(shape, spec, albedo_at)
    assert asset.texture is not None and not asset.notes
    return asset


def test_finish_asset_decimates_then_bakes_with_one_uv_per_corner(textured):
    mesh, texture = textured.mesh, textured.texture
    assert abs(mesh.triangle_count - 6000) <= 300 and _closed(mesh)
    assert texture.size == (SIZE, SIZE) and texture.image.shape == (SIZE, SIZE, 3)
    assert texture.uvs.shape == (3 * mesh.triangle_count, 2)
    assert texture.uvs.min() >= 0 and texture.uvs.max() <= 1
    np.testing.assert_array_equal(mesh.colors, albedo_at(mesh.positions))  # colours resampled after decimating
    assert set(textured.seconds) == {"decimation", "atlas", "bake"}


def test_the_texture_matches_the_field_at_every_vertex_and_across_seams(textured):
    mesh, texture = textured.mesh, textured.texture
    corners = mesh.positions[mesh.triangles.reshape(-1)]
    error = np.abs(sample(texture.image, texture.uvs) - albedo_at(corners)[:, :3]).max(axis=1)
    assert np.median(error) <= 8 and np.percentile(error, 95) <= 24, (np.median(error), np.percentile(error, 95))
    # The rim of every chart: texels inside a triangle with a neighbour outside every one. Each has the
    # field's colour at its own surface point, not a background's.
    raster = rasterise(texture.uvs, SIZE)
    inside = raster.inside
    padded = np.pad(inside, 1)
    rim = inside & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    assert rim.sum() > 500
    surface = np.einsum("kj,kjd->kd", raster.bary[rim].astype(np.float64),
                        mesh.positions[mesh.triangles[raster.face[rim]]].astype(np.float64))
    rim_error = np.abs(texture.image[rim].astype(int) - albedo_at(surface)[:, :3]).max(axis=1)
    assert rim_error.max() <= 1, rim_error.max()


def test_no_background_is_left_anywhere_so_no_mip_level_can_show_it(shape):
    red = lambda p: np.tile(np.array([[200, 30, 20, 255]], np.uint8), (len(p), 1))  # noqa: E731
    uvs = uv_atlas(shape.positions, shape.triangles, 256)
    image = bake(shape.positions, shape.triangles, uvs, 256, red)
    assert (image == [200, 30, 20]).all()


def _import(path, importer) -> "bpy.types.Object":
    bpy.ops.wm.read_factory_settings(use_empty=True)
    importer(filepath=str(path))
    (obj,) = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    return obj


def _texture_node(obj):
    material = obj.active_material
    (node,) = [n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"]
    linked = {link.to_socket.name for link in material.node_tree.links if link.from_node == node}
    return node.image, linked


def _blender_texture_error(obj) -> np.ndarray:
    """|texture at each corner's UV - field albedo at that corner's vertex| (max over RGB), from what Blender
    imported: its image pixels, UV layer and vertex positions (back in our Z-up frame)."""
    image, _ = _texture_node(obj)
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    # A byte image's pixels are its file's sRGB values (as floats), bottom row first.
    top_down = np.flipud(pixels.reshape(height, width, 4))[..., :3] * 255.0
    mesh = obj.data
    uvs = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.data.foreach_get("uv", uvs)
    corner_vertices = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corner_vertices)
    positions = np.array([tuple(obj.matrix_world @ v.co) for v in mesh.vertices])
    return np.abs(sample(top_down, uvs.reshape(-1, 2)) - albedo_at(positions[corner_vertices])[:, :3]).max(axis=1)


def test_a_textured_glb_imports_in_blender_with_its_texture_and_uvs(textured, tmp_path):
    (path,) = export_result(textured.mesh, tmp_path / "asset.glb", textured.texture)
    data = path.read_bytes()
    gltf = json.loads(data[20:20 + struct.unpack_from("<I", data, 12)[0]])
    primitive = gltf["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "TEXCOORD_0", "_ALBEDO"} <= set(primitive["attributes"])
    assert "COLOR_0" not in primitive["attributes"]  # it would multiply into the texture
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert gltf["images"][0]["mimeType"] == "image/png"

    obj = _import(path, bpy.ops.import_scene.gltf)
    image, linked = _texture_node(obj)
    assert tuple(image.size) == (SIZE, SIZE) and image.colorspace_settings.name == "sRGB"
    assert "Base Color" in linked and obj.data.uv_layers.active is not None
    assert "_ALBEDO" in obj.data.color_attributes  # the vertex albedo, still there
    error = _blender_texture_error(obj)
    assert np.median(error) <= 8, np.median(error)


def test_obj_mtl_and_png_round_trip_through_blenders_obj_importer(textured, tmp_path):
    written = export_result(textured.mesh, tmp_path / "asset.obj", textured.texture)
    assert [p.name for p in written] == ["asset.obj", "asset_albedo.png", "asset.mtl"]
    assert texture_png_path(written[0]) == written[1]
    obj = _import(written[0], bpy.ops.wm.obj_import)
    assert len(obj.data.vertices) == textured.mesh.vertex_count  # welded: OBJ indexes UVs on their own
    image, linked = _texture_node(obj)
    assert tuple(image.size) == (SIZE, SIZE) and "Base Color" in linked
    assert np.median(_blender_texture_error(obj)) <= 8
    srgb = np.array([tuple(d.color_srgb)[:3] for d in obj.data.color_attributes[0].data]) * 255
    assert np.abs(srgb - textured.mesh.colors[:, :3]).max() <= 1  # and the vertex colours too


def test_ply_stays_vertex_colours(textured, tmp_path):
    assert export_result(textured.mesh, tmp_path / "asset.ply", textured.texture) == [tmp_path / "asset.ply"]


def test_a_locked_start_mesh_is_not_decimated_or_smoothed(shape):
    spec = JobSpec(prompt="x", seed=0, init="checkpoint", init_from="job-1", lock_geometry=True, face_count=500,
                   smoothing=3, texture_size=512)
    asset = finish_asset(shape, spec, albedo_at, keep_geometry=True)
    assert asset.mesh is shape and asset.texture is not None and "not applied" in asset.notes[0]


def test_texture_buffers_travel_and_are_checked_against_the_mesh(textured):
    from blender_dreamfusion.shared import Finished, decode, encode
    from blender_dreamfusion.shared.errors import BadBuffer

    message = Finished(job_id="j1", step=10, mesh=textured.mesh, texture=textured.texture)
    frames = encode(message)
    back = decode([bytes(f) for f in frames])
    assert back.texture == textured.texture and back.mesh == textured.mesh
    with pytest.raises(BadBuffer, match="texture: uvs has"):
        Finished(job_id="j1", step=10, mesh=textured.mesh, texture=Texture(textured.texture.uvs[:-3],
                                                                           textured.texture.image))
    header = json.loads(bytes(frames[1]))
    names = [b["name"] for b in header["buffers"]]
    assert {"texture_uvs", "texture_image"} <= set(names)
    keep = [i for i, name in enumerate(names) if name != "texture_image"]
    header["buffers"] = [header["buffers"][i] for i in keep]
    broken = [frames[0], json.dumps(header).encode(), *(bytes(frames[2 + i]) for i in keep)]
    with pytest.raises(BadBuffer, match="texture needs buffers texture_uvs, texture_image; missing texture_image"):
        decode(broken)
    with pytest.raises(BadBuffer, match="a mesh with no triangles has nothing to texture"):
        Finished(job_id="j1", step=1, mesh=MeshData.coerce(textured.mesh.positions, np.zeros((0, 3), np.int32)),
                 texture=Texture(np.zeros((0, 2), np.float32), textured.texture.image))
    with pytest.raises(BadBuffer, match=r"image must have shape \(H, W, 3 or 4\)"):
        Texture(textured.texture.uvs, np.zeros((8, 5000, 3), np.uint8))


@pytest.mark.parametrize("field, value, allowed", [
    ("texture_size", 300, "one of 0, 512, 1024, 2048, 4096"),
    ("face_count", -1, "an integer from 0 to 2000000"),
    ("smoothing", 101, "an integer from 0 to 100"),
])
def test_bad_output_values_are_refused_naming_the_field_and_what_is_allowed(field, value, allowed):
    from blender_dreamfusion.shared.errors import SpecError

    with pytest.raises(SpecError) as caught:
        JobSpec(prompt="x", **{field: value})
    assert caught.value.field == field and allowed in str(caught.value)


def test_a_kept_start_mesh_refuses_decimation():
    from blender_dreamfusion.shared.errors import SpecError

    with pytest.raises(SpecError, match="face_count = 100 is set; allowed: 0 when lock_geometry"):
        JobSpec(prompt="x", init="mesh", lock_geometry=True, face_count=100)


def test_a_sliver_xatlas_shrank_to_a_point_reads_its_vertex_colour_and_stays_a_point():
    from blender_dreamfusion.backend.asset.atlas import _place_slivers

    triangles = np.array([[0, 1, 2], [3, 4, 5], [2, 3, 6]])  # the third: a sliver across two charts
    uvs = np.array([[[0.1, 0.1], [0.2, 0.1], [0.1, 0.2]], [[0.7, 0.7], [0.8, 0.7], [0.7, 0.8]],
                    [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]], np.float32)
    _place_slivers(uvs, triangles)
    np.testing.assert_allclose(uvs[2], [[0.1, 0.2]] * 3)  # vertex 2's place in the first chart, as a point
    np.testing.assert_allclose(uvs[:2, 0], [[0.1, 0.1], [0.7, 0.7]])  # charted triangles untouched


def test_a_locked_start_mesh_is_baked_into_its_own_uvs_and_they_outlive_a_checkpoint(tmp_path):
    from blender_dreamfusion.backend.checkpoint import load_checkpoint, save_checkpoint
    from blender_dreamfusion.backend.trainer import Trainer

    box = trimesh.creation.box([0.8, 0.6, 0.5])
    mesh = MeshData.coerce(box.vertices, box.faces, np.full((len(box.vertices), 4), (40, 160, 60, 255), np.uint8))
    # The artist's layout: each face's own square of a 4 x 3 grid, corner for corner.
    cell = np.arange(mesh.triangle_count) // 2
    corner = np.tile(np.array([[0, 0], [1, 0], [1, 1]], np.float32), (mesh.triangle_count, 1)) * 0.2
    uvs = (np.repeat(np.stack([cell % 4, cell // 4], axis=1) * 0.25, 3, axis=0) + corner).astype(np.float32)
    spec = JobSpec(prompt="a green cube", init="mesh", lock_geometry=True, texture_size=512, steps=2, seed=3,
                   mesh_resolution=32)
    trainer = Trainer(spec, guidance=None)
    trainer.start_from_mesh(mesh, uvs)
    asset = trainer.final_asset(trainer.snapshot(preview=False).extraction.mesh)
    np.testing.assert_array_equal(asset.texture.uvs, uvs)  # no new atlas: the artist's own
    assert asset.mesh.triangle_count == mesh.triangle_count
    # The bake lands in those squares: the texture at each corner's UV is the colour there.
    error = np.abs(sample(asset.texture.image, uvs) - asset.mesh.colors[mesh.triangles.reshape(-1)][:, :3])
    assert np.median(error.max(axis=1)) <= 8
    path = save_checkpoint(trainer, tmp_path / "locked.safetensors")
    again = load_checkpoint(path, spec.replace(init="checkpoint", init_from=str(path)), None, resume=False)
    np.testing.assert_array_equal(again.fixed_uvs, uvs)


def test_init_uvs_travel_with_their_start_mesh_and_are_checked_against_it():
    from blender_dreamfusion.shared import Submit, decode, encode
    from blender_dreamfusion.shared.errors import BadBuffer
    from blender_dreamfusion.shared.mesh import CornerUVs

    box = trimesh.creation.box()
    mesh = MeshData.coerce(box.vertices, box.faces)
    spec = JobSpec(prompt="x", init="mesh", lock_geometry=True)
    uvs = CornerUVs(np.random.default_rng(0).random((3 * mesh.triangle_count, 2), np.float32))
    back = decode([bytes(f) for f in encode(Submit(spec=spec, init_mesh=mesh, init_uvs=uvs))])
    assert back.init_uvs == uvs
    with pytest.raises(BadBuffer, match="init_uvs has 3 rows; init_mesh's 12 triangles need 36"):
        Submit(spec=spec, init_mesh=mesh, init_uvs=CornerUVs(uvs.uvs[:3]))
    with pytest.raises(BadBuffer, match="init_uvs travels only with init_mesh"):
        Submit(spec=JobSpec(prompt="x"), init_uvs=uvs)


def test_a_textured_file_read_back_as_a_start_mesh_brings_its_uvs(textured, tmp_path):
    from blender_dreamfusion.backend.mesh_import import read_mesh_with_uvs

    for suffix in (".glb", ".obj"):
        path = export_result(textured.mesh, tmp_path / f"asset{suffix}", textured.texture)[0]
        mesh, uvs = read_mesh_with_uvs(path)
        assert uvs is not None and uvs.shape == (3 * mesh.triangle_count, 2)
        # Each corner's UV is where that corner was: the same layout, whatever the reader did to the vertices.
        # (A seam vertex has one UV per chart it is in, so (position, UV) pairs are compared.)
        from scipy.spatial import cKDTree

        def pairs(m, u):
            return np.concatenate([m.positions[m.triangles.reshape(-1)], u], axis=1).astype(np.float64)
        distance, _ = cKDTree(pairs(textured.mesh, textured.texture.uvs)).query(pairs(mesh, uvs))
        assert distance.max() < 1e-4, (suffix, distance.max())


def test_own_uvs_that_tile_are_wrapped_and_ones_that_overlap_everywhere_get_a_new_atlas(shape):
    spec = JobSpec(prompt="x", seed=0, init="mesh", lock_geometry=True, texture_size=512)
    corner = uv_atlas(shape.positions, shape.triangles, 512)  # a layout of their own, then shifted by tiles
    tiled = corner + np.repeat(np.arange(shape.triangle_count) % 3, 3)[:, None].astype(np.float32)  # tiles 0-2
    asset = finish_asset(shape, spec, albedo_at, keep_geometry=True, own_uvs=tiled)
    np.testing.assert_allclose(asset.texture.uvs, corner, atol=1e-6)  # each triangle moved into the one tile
    everywhere = np.tile(np.array([[0, 0], [1, 0], [0, 1]], np.float32), (shape.triangle_count, 1))
    asset = finish_asset(shape, spec, albedo_at, keep_geometry=True, own_uvs=everywhere)
    assert "overlap too much" in asset.notes[0] and not np.array_equal(asset.texture.uvs, everywhere)
