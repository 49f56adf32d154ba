"""The extension as built by build_addon.py: zip contents, and register/unregister in the real `bpy` module."""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_addon  # noqa: E402


@pytest.fixture
def addon(tmp_path, monkeypatch):
    build_addon.assemble(tmp_path / "dreamfusion")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "dreamfusion" or m.startswith("dreamfusion.")]:
        del sys.modules[name]
    module = importlib.import_module("dreamfusion")
    yield module
    if hasattr(bpy.types, "VIEW3D_PT_dreamfusion"):
        module.unregister()


def test_register_unregister_register(addon):
    addon.register()
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion") and hasattr(bpy.types.Scene, "dreamfusion")
    assert bpy.app.timers.is_registered(addon.client_loop.tick)
    assert addon.panel._object_menu in bpy.types.VIEW3D_MT_object._dyn_ui_initialize()
    addon.unregister()
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion") and not hasattr(bpy.types.Scene, "dreamfusion")
    assert not bpy.app.timers.is_registered(addon.client_loop.tick)
    # Nothing left behind: no draw handler, no menu entry.
    assert not addon.overlay.handler_installed()
    assert addon.panel._object_menu not in bpy.types.VIEW3D_MT_object._dyn_ui_initialize()
    assert addon.history._pack_thumbnails not in bpy.app.handlers.save_pre
    addon.register()
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
    assert bpy.ops.dreamfusion.generate.poll()


def test_overlay_is_off_by_default_hides_while_a_job_runs_and_never_draws_in_background(addon):
    addon.register()
    overlay, state = addon.overlay, bpy.context.scene.dreamfusion
    assert not overlay.handler_installed()  # no viewport in background mode: no draw handler at all
    assert overlay.visible_parts(bpy.context.scene) == (False, False)
    state.overlay_cameras = True
    assert overlay.visible_parts(bpy.context.scene) == (True, False)
    state.overlay_lights = True
    job = state.jobs.add()
    job.job_id, job.state = "j1", "running"
    assert overlay.visible_parts(bpy.context.scene) == (False, False)
    state.overlay_while_running = True
    assert overlay.visible_parts(bpy.context.scene) == (True, True)
    job.state = "finished"
    state.overlay_while_running = False
    assert overlay.visible_parts(bpy.context.scene) == (True, True)
    # Every setting the overlay draws redraws the viewport when it changes.
    props = state.settings.bl_rna.properties
    assert set(overlay.RANGE_FIELDS) <= set(props.keys())
    state.jobs.clear()
    addon.unregister()
    assert not overlay.handler_installed()


def test_vendored_protocol_is_the_addons_own_copy(addon):
    assert addon.panel.__name__ == "dreamfusion.panel"
    shared_copy = sys.modules["dreamfusion.shared"]
    assert Path(shared_copy.__file__).parent.parent == Path(addon.__file__).parent
    assert shared_copy.PROTOCOL_TAG == b"dreamfusion/1"


def test_scene_settings_mirror_the_jobspec_limits(addon):
    from blender_dreamfusion.shared.jobspec import jobspec_knobs

    addon.register()
    settings = bpy.context.scene.dreamfusion.settings
    props = settings.bl_rna.properties
    for name, knob in jobspec_knobs().items():
        if name in addon.properties.HIDDEN_FIELDS:
            continue
        prop = props[name]
        assert knob.help in prop.description, name
        if knob.values:  # a fixed list of numbers is a menu of exactly those
            assert [item.identifier for item in prop.enum_items] == [str(v) for v in knob.values], name
        elif knob.value_type in ("int", "float", "range"):
            assert prop.hard_min == pytest.approx(knob.minimum), name
            assert prop.hard_max == pytest.approx(min(knob.maximum, 2**31 - 1)), name
        if knob.value_type == "choice":
            assert {item.identifier for item in prop.enum_items} == set(knob.choices), name
    # The default model is the built-in prior, so its recommended scene is what a new scene starts with.
    assert settings.model == "toy-shapes" and settings.background == "grey" and settings.render_resolution == 32
    settings.preset = "draft"
    assert settings.steps == 1000 and settings.mesh_resolution == 64


@pytest.mark.parametrize("flavour, python_tag, blender_max", [("py311", "cp311-cp311", "5.1.0"),
                                                                 ("py313", "cp312-abi3", None)])
def test_zip_has_manifest_vendored_shared_and_the_wheels_it_lists(tmp_path, flavour, python_tag, blender_max):
    zip_path = build_addon.build_zip(tmp_path, flavour)
    assert zip_path.name.endswith(f"-{flavour}.zip")
    archive = zipfile.ZipFile(zip_path)
    names = set(archive.namelist())
    assert {"blender_manifest.toml", "__init__.py", "panel.py", "operators.py", "client_loop.py",
            "shared/__init__.py", "shared/client.py", "addon_core/__init__.py", "addon_core/job_tracker.py",
            "addon_core/local_backend.py"} <= names
    assert not any("__pycache__" in n for n in names)
    manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert manifest["id"] == "dreamfusion" and manifest["blender_version_min"] == "4.2.0"
    assert manifest.get("blender_version_max") == blender_max
    assert manifest["type"] == "add-on" and set(manifest["permissions"]) == {"network", "files"}
    wheels = manifest["wheels"]
    for wheel in wheels:
        assert wheel.startswith("./wheels/") and wheel[2:] in names, wheel
        assert archive.getinfo(wheel[2:]).file_size > 100_000  # a real wheel, not a stub
        # Blender derives the extension's Python from the wheel tags: one zip must not mix them.
        assert wheel.split("/")[-1].startswith("pyzmq-27") and python_tag in wheel, wheel
    for platform in ("manylinux", "win_amd64", "universal2"):
        assert any(platform in w for w in wheels), platform
    assert set(manifest["platforms"]) == {"linux-x64", "windows-x64", "macos-arm64", "macos-x64"}
    # shared/ and addon_core/ are imported relatively inside the add-on: no absolute imports of the
    # installed package (or of the repository's folders) may slip in.
    for name in names:
        if name.startswith(("shared/", "addon_core/")) and name.endswith(".py"):
            text = archive.read(name).decode()
            for absolute in ("from blender_dreamfusion", "import blender_dreamfusion", "from shared", "import shared",
                             "from backend"):
                assert absolute not in text, (name, absolute)


def test_zip_without_wheels_lists_none(tmp_path):
    zip_path = build_addon.build_zip(tmp_path, None)
    manifest = tomllib.loads(zipfile.ZipFile(zip_path).read("blender_manifest.toml").decode())
    assert manifest["wheels"] == [] and "platforms" not in manifest


def test_a_scene_takes_the_default_model_until_one_is_chosen(addon):
    addon.register()
    scene = bpy.data.scenes.new("Another")
    try:
        settings = scene.dreamfusion.settings
        settings.model = "toy-shapes"  # chosen: the preference no longer applies
        assert not addon.properties.adopt_default_model(settings, "/models/sd21")
        fresh = bpy.data.scenes.new("Fresh").dreamfusion.settings
        assert addon.properties.adopt_default_model(fresh, "/models/sd21") and fresh.model == "/models/sd21"
        assert not addon.properties.adopt_default_model(fresh, "toy-shapes")  # now it counts as chosen
    finally:
        for name in ("Another", "Fresh"):
            bpy.data.scenes.remove(bpy.data.scenes[name])


def test_choosing_a_real_model_applies_its_recipe_and_values_set_after_stay(addon):
    addon.register()
    settings = bpy.data.scenes.new("Recipes").dreamfusion.settings
    try:
        settings.model = "stabilityai/stable-diffusion-2-1-base"
        assert (settings.guidance_scale, settings.steps, settings.background) == (100.0, 10000, "random")
        assert settings.render_resolution == 64 and settings.stream_every == 250
        settings.steps = 3000  # the artist's edit, after choosing
        settings.model = "DeepFloyd/IF-I-XL-v1.0"
        assert settings.guidance_scale == 20.0 and settings.steps == 10000
        settings.guidance_scale = 15.0
        settings.model = "someone/unknown-model"  # nothing known: nothing changes
        assert settings.guidance_scale == 15.0 and settings.steps == 10000
    finally:
        bpy.data.scenes.remove(bpy.data.scenes["Recipes"])


def _unlike(defaults: dict) -> dict:
    """A valid JobSpec dict whose every panel field differs from `defaults` (exact in single precision)."""
    from blender_dreamfusion.shared.jobspec import jobspec_knobs

    values = {}
    for name, knob in jobspec_knobs().items():
        if name not in defaults:  # not in the panel
            continue
        default = defaults[name]
        if knob.value_type == "text":
            values[name] = "toy-shapes" if name == "model" else f"recall {name} ✓"
        elif knob.value_type == "bool":
            values[name] = not default
        elif knob.value_type == "choice":
            values[name] = next(c for c in knob.choices if c != default)
        elif knob.value_type == "int" and knob.values:
            values[name] = next(v for v in knob.values if v != default)
        elif knob.value_type == "int":
            high = min(knob.maximum, 2**31 - 1)
            values[name] = default + 8 if default + 8 <= high else (default - 8 if default - 8 >= knob.minimum
                                                                    else high)
        elif knob.value_type == "float":
            step = (knob.maximum - knob.minimum) * 0.37
            quarter = round((knob.minimum + step) * 4) / 4
            # Another value, exact in single precision (a panel property is a float): 0.01 is not, 0.5 is.
            values[name] = next(v for v in (quarter, knob.minimum, knob.maximum, 0.5)
                                if v != default and knob.minimum <= v <= knob.maximum and float(np.float32(v)) == v)
        elif knob.value_type == "range":
            low = round((knob.minimum + (knob.maximum - knob.minimum) * 0.3) * 4) / 4
            high = round((knob.minimum + (knob.maximum - knob.minimum) * 0.55) * 4) / 4
            values[name] = [low, high] if [low, high] != list(default) else [knob.minimum, high]
    values.update(init="blob", init_from="", seed=123_456_789)
    return values


def test_recall_puts_every_field_of_a_finished_job_back_into_the_panel(addon):
    from blender_dreamfusion.shared.jobspec import JobSpec as PlainSpec

    addon.register()
    state = bpy.context.scene.dreamfusion
    state.jobs.clear()
    state.settings.model = "/models/another"  # Recall's toy-shapes then applies its recommendations first
    # Off, so that the recalled spec can turn it on with a Perp-Neg strength (which needs view prompts).
    state.settings.view_dependent = False
    state.settings.geometry = "density"  # so the recalled job is an SDF, with an option of its own to recall
    spec = PlainSpec.from_dict(_unlike(addon.properties.spec_values(state.settings)))
    assert spec.geometry == "sdf" and spec.geometry_options.eikonal_weight != 0.1
    item = state.jobs.add()
    item.job_id, item.prompt, item.state = "j-recall", spec.prompt, "finished"
    addon.history.record_spec(item, spec)
    state.active_job_index = 0
    assert item.spec_json and item.seed == "123456789", (item.spec_json, item.seed)
    before = addon.properties.spec_values(state.settings)
    state.lock_seed = False
    assert bpy.ops.dreamfusion.recall() == {"FINISHED"}
    assert state.lock_seed, "a recalled job runs again with its own seed, not a freshly drawn one"
    recalled = addon.properties.spec_values(state.settings)
    expected = {k: v for k, v in spec.to_dict().items() if k not in addon.properties.HIDDEN_FIELDS}
    changed = [k for k in expected if before[k] != expected[k]]
    assert len(changed) == len(expected), set(expected) - set(changed)  # every field had to move
    assert PlainSpec.from_dict(recalled).to_dict() == {**spec.to_dict(), "init": "blob", "init_from": ""}
    assert recalled == {k: (list(v) if isinstance(v, tuple) else v) for k, v in expected.items()}
    # Copy Settings puts the same JobSpec on the clipboard (background mode has no clipboard to read back).
    assert bpy.ops.dreamfusion.copy_settings() == {"FINISHED"}
    assert json.loads(addon.history.settings_text(item)) == json.loads(json.dumps(spec.to_dict()))


def test_thumbnails_survive_save_and_reopen_and_clear_finished_keeps_running_jobs(addon, tmp_path):
    import numpy as np

    addon.register()
    state = bpy.context.scene.dreamfusion
    state.jobs.clear()
    pixels = np.zeros((6, 8, 3), np.uint8)
    pixels[..., 0] = np.arange(8) * 30
    pixels[..., 1] = (np.arange(6) * 40)[:, None]
    for job_id, job_state in (("j-done", "finished"), ("j-live", "running")):
        item = state.jobs.add()
        item.job_id, item.state, item.prompt = job_id, job_state, f"prompt {job_id}"
        addon.history.store_thumbnail(item, pixels)
    addon.history.store_thumbnail(state.jobs[0], pixels)  # a newer preview rewrites the same image
    assert len([i for i in bpy.data.images if i.name.startswith("DreamFusion ")]) == 2
    big = np.zeros((1000, 600, 3), np.uint8)
    extra = state.jobs.add()
    extra.job_id, extra.state = "j-big", "running"
    addon.history.store_thumbnail(extra, big)  # a big preview from a remote backend: a small thumbnail
    assert max(extra.thumbnail.size) <= addon.history.THUMBNAIL_SIDE
    state.jobs.remove(2)
    path = tmp_path / "history.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    state = bpy.context.scene.dreamfusion
    image = state.jobs[0].thumbnail
    assert image is not None and tuple(image.size) == (8, 6) and image.packed_file is not None
    back = np.empty(8 * 6 * 4, np.float32)
    image.pixels.foreach_get(back)
    rgb = np.round(back.reshape(6, 8, 4)[::-1, :, :3] * 255).astype(np.uint8)
    assert np.array_equal(rgb, pixels)
    state.active_job_index = 0
    assert bpy.ops.dreamfusion.clear_finished() == {"FINISHED"}
    assert [item.job_id for item in state.jobs] == ["j-live"] and state.jobs[0].thumbnail is not None
    assert "DreamFusion j-done" not in bpy.data.images
    assert "DreamFusion j-big" not in bpy.data.images  # unused since its job left the list: not saved
    bpy.ops.wm.read_homefile(use_empty=True)


def test_refinement_specs_frames_and_start_mesh_limits():
    import numpy as np

    from blender_dreamfusion.addon_core import refine
    from blender_dreamfusion.shared.errors import BadBuffer, SpecError
    from blender_dreamfusion.shared.jobspec import JobSpec as PlainSpec
    from blender_dreamfusion.shared.mesh import MAX_INIT_TRIANGLES

    parent = PlainSpec(prompt="a red cube", seed=3, steps=40, init="mesh", lock_geometry=True)
    more = refine.continue_spec(parent, "job-1", 40, 25, lock_geometry=False)
    # The steps are the total; a locked parent stays locked; the rest is the parent's.
    assert (more.init, more.init_from, more.steps, more.lock_geometry) == ("checkpoint", "job-1", 65, True)
    assert more.seed == 3
    renamed = refine.continue_spec(parent.replace(lock_geometry=False), "job-1", 40, 5, False, prompt="a blue cube")
    assert (renamed.prompt, renamed.steps, renamed.lock_geometry) == ("a blue cube", 45, False)
    with pytest.raises(SpecError, match="steps = 200040 is out of range"):
        refine.continue_spec(parent, "job-1", 40, 200_000, False)
    textured = refine.mesh_spec(PlainSpec(prompt="a vase", seed=1).to_dict(), lock_geometry=True)
    assert (textured.init, textured.init_from, textured.lock_geometry) == ("mesh", "", True)

    # A frame takes local coordinates to the wire's; to_local undoes it (the identity is free).
    matrix = np.array([[0, -2, 0, 1], [2, 0, 0, 2], [0, 0, 2, 3], [0, 0, 0, 1]], np.float64)
    local = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    wire = refine.transform(local, matrix.ravel())
    np.testing.assert_allclose(refine.to_local(wire, matrix.ravel()), local, atol=1e-5)
    assert refine.to_local(wire, refine.IDENTITY) is wire
    assert refine.is_frame(list(matrix.ravel())) and not refine.is_frame([0.0] * 16) and not refine.is_frame("x")

    grey = refine.start_mesh(local, np.array([[0, 1, 2]]))
    assert grey.colors.dtype == np.uint8 and (grey.colors == refine.GREY).all()
    with pytest.raises(BadBuffer, match="the mesh of 'Flat' has no extent"):
        refine.start_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), field="the mesh of 'Flat'")
    with pytest.raises(BadBuffer, match=f"has {MAX_INIT_TRIANGLES + 1} triangles; a start mesh may have at most "
                                        f"{MAX_INIT_TRIANGLES}"):
        refine.start_mesh(local, np.zeros((MAX_INIT_TRIANGLES + 1, 3), np.int64))


def test_start_mesh_is_the_evaluated_triangulated_world_mesh_with_its_colours(addon):
    import numpy as np
    from mathutils import Vector

    addon.register()
    mesh = bpy.data.meshes.new("quad pair")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (2, 0, 0), (2, 1, 0)], [],
                     [(0, 1, 2, 3), (1, 4, 5, 2)])
    obj = bpy.data.objects.new("Start", mesh)
    bpy.context.scene.collection.objects.link(obj)
    try:
        obj.location, obj.rotation_euler, obj.scale = (1.0, 2.0, 3.0), (0.0, 0.0, 1.5707963), (2.0, 2.0, 2.0)
        array = obj.modifiers.new("array", "ARRAY")  # the start is what the artist sees: modifiers applied
        array.count, array.use_relative_offset, array.use_constant_offset = 2, False, True
        array.constant_offset_displace = (0.0, 0.0, 1.0)
        bpy.context.view_layer.update()
        read = addon.mesh_source.world_mesh([obj], bpy.context.evaluated_depsgraph_get())
        assert (read.vertex_count, read.triangle_count) == (12, 8)
        local = np.array([v.co for v in mesh.vertices] + [(x, y, z + 1) for x, y, z in (v.co for v in mesh.vertices)])
        world = np.array([obj.matrix_world @ Vector(p) for p in local])
        np.testing.assert_allclose(read.positions, world, atol=1e-5)
        assert (read.colors == (128, 128, 128, 255)).all()  # no colour attribute: mid grey
        # A corner colour attribute is averaged per vertex; a point one is taken as it is.
        corners = mesh.color_attributes.new("paint", "BYTE_COLOR", "CORNER")
        values = np.zeros((len(mesh.loops), 4), np.float32)
        values[:, 3] = 1.0
        values[[1, 4], 0] = [1.0, 0.0]  # vertex 1 is corner 1 of the first quad and corner 0 of the second
        corners.data.foreach_set("color_srgb", values.ravel())
        mesh.color_attributes.default_color_name = "paint"
        bpy.context.view_layer.update()
        read = addon.mesh_source.world_mesh([obj], bpy.context.evaluated_depsgraph_get())
        assert tuple(read.colors[1]) == (128, 0, 0, 255) and tuple(read.colors[0]) == (0, 0, 0, 255)
        empty = bpy.data.objects.new("Nothing", bpy.data.meshes.new("nothing"))
        with pytest.raises(ValueError, match="the mesh of 'Nothing' is empty: a start mesh needs 1 to"):
            addon.mesh_source.world_mesh([empty], bpy.context.evaluated_depsgraph_get(),
                                         field="the mesh of 'Nothing'")
        bpy.data.objects.remove(empty)
    finally:
        bpy.data.objects.remove(obj)


def test_a_colour_only_update_rewrites_the_albedo_and_leaves_the_geometry(addon):
    import numpy as np

    from blender_dreamfusion.addon_core.refine import transform
    from blender_dreamfusion.shared import MeshData

    addon.register()
    scene_update = addon.scene_update
    rng = np.random.default_rng(1)
    positions = rng.normal(size=(30, 3)).astype(np.float32)
    mesh = MeshData.coerce(positions, rng.integers(0, 30, size=(40, 3)), rng.integers(0, 256, (30, 4), np.uint8))
    frame = (2.0, 0, 0, 1.0, 0, 2.0, 0, -1.0, 0, 0, 2.0, 0.5, 0, 0, 0, 1.0)
    wire = MeshData(transform(positions, frame), mesh.triangles, mesh.colors)
    obj = scene_update.apply_mesh(bpy.context.scene, "j-colours", "colours", wire, 5, "toy-shapes", frame=frame)
    try:
        def geometry():
            out = np.empty(len(obj.data.vertices) * 3, np.float32)
            obj.data.attributes["position"].data.foreach_get("vector", out)
            corners = np.empty(len(obj.data.loops), np.int32)
            obj.data.attributes[".corner_vert"].data.foreach_get("value", corners)
            return out.reshape(-1, 3), corners

        def albedo():
            out = np.empty(len(obj.data.vertices) * 4, np.float32)
            obj.data.color_attributes["albedo"].data.foreach_get("color_srgb", out)
            return np.round(out.reshape(-1, 4) * 255).astype(np.uint8)

        local, corners = geometry()
        np.testing.assert_allclose(local, positions, atol=1e-5)  # written in the object's local coordinates
        pointer = obj.data.as_pointer()
        colors = rng.integers(0, 256, (30, 4), np.uint8)
        assert scene_update.apply_colors(obj, colors, 7)
        after, after_corners = geometry()
        assert np.array_equal(after, local) and np.array_equal(after_corners, corners)
        assert np.array_equal(albedo(), colors) and obj["dreamfusion_step"] == 7
        assert obj.data.as_pointer() == pointer and obj.data.color_attributes.keys() == ["albedo"]
        # Colours for another vertex count (the artist edited the mesh): nothing is written.
        assert not scene_update.apply_colors(obj, colors[:-1], 8)
        assert np.array_equal(albedo(), colors) and obj["dreamfusion_step"] == 7
    finally:
        bpy.data.objects.remove(obj)
