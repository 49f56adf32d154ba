"""The add-on end to end in the real `bpy` module: operators -> local backend subprocess -> meshes in the scene.

The add-on is installed from build_addon.py's zip and enabled through
addon_utils; its preferences point at this venv's `dreamfusion-backend`,
which the add-on launches itself. Timers never fire in module mode, so the
tests call the registered timer function (`client_loop.tick`) until the
condition holds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import build_addon  # noqa: E402
from tests.helpers.addon import BACKEND, disable, install_from_zip, job, tick_until  # noqa: E402

from blender_dreamfusion.shared.client import BackendClient  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def addon(tmp_path_factory, tiny_sd):
    root = tmp_path_factory.mktemp("addon")
    module = install_from_zip(build_addon.build_zip(root / "dist"), root / "addons")
    prefs = bpy.context.preferences.addons["dreamfusion"].preferences
    prefs.backend_executable = str(BACKEND)
    prefs.device = "cpu"
    prefs.data_dir = str(root / "jobs")
    settings = bpy.context.scene.dreamfusion.settings
    settings.model = str(tiny_sd)
    settings.prompt = "a red cube"
    settings.seed = 3
    bpy.context.scene.dreamfusion.lock_seed = True  # (unlocked, every Generate would draw a new one)
    settings.render_resolution = 32
    settings.mesh_resolution = 32
    settings.views_per_step = 1
    settings.stream_every = 5
    settings.steps = 40
    yield module
    if "dreamfusion" in bpy.context.preferences.addons:
        disable()


def _session():
    from dreamfusion.addon_core.session import SESSION

    return SESSION


def _positions(obj) -> np.ndarray:
    out = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def _albedo(obj) -> np.ndarray:
    attribute = obj.data.color_attributes["albedo"]
    out = np.empty(len(obj.data.vertices) * 4, np.float32)
    attribute.data.foreach_get("color_srgb", out)
    return np.round(out.reshape(-1, 4) * 255).astype(np.uint8)


def test_bad_input_is_refused_and_nothing_is_sent(addon):
    settings = bpy.context.scene.dreamfusion.settings
    settings.prompt = "   "
    with pytest.raises(RuntimeError, match='type a prompt first: what to make, e.g. "a ceramic teapot"'):
        bpy.ops.dreamfusion.generate()
    settings.prompt = "a red cube"
    settings.camera_elevation = (60.0, 10.0)
    with pytest.raises(RuntimeError, match=r"camera_elevation .* has min > max; allowed: \[min, max\]"):
        bpy.ops.dreamfusion.generate()
    settings.camera_elevation = (-10.0, 90.0)
    session = _session()
    assert session.backend is None and session.client is None, "a refused job must not start anything"
    assert len(bpy.context.scene.dreamfusion.jobs) == 0


def test_refine_bad_input_is_reported_and_nothing_is_sent(addon):
    from blender_dreamfusion.shared.mesh import MAX_INIT_TRIANGLES

    scene, view_layer = bpy.context.scene, bpy.context.view_layer
    objects_before = set(bpy.data.objects.keys())
    camera = bpy.data.objects.new("Refine camera", bpy.data.cameras.new("Refine camera"))
    empty = bpy.data.objects.new("Refine empty", bpy.data.meshes.new("Refine empty"))
    for obj in (camera, empty):
        scene.collection.objects.link(obj)
    try:
        view_layer.objects.active = None
        with pytest.raises(RuntimeError, match="no active object: select the mesh to start from"):
            bpy.ops.dreamfusion.texture_mesh()
        with pytest.raises(RuntimeError, match="no active object: select a DreamFusion result"):
            bpy.ops.dreamfusion.continue_job()
        view_layer.objects.active = camera
        with pytest.raises(RuntimeError, match="'Refine camera' is a camera, not a mesh: select a mesh object"):
            bpy.ops.dreamfusion.refine_mesh()
        view_layer.objects.active = empty
        with pytest.raises(RuntimeError, match=f"the mesh of 'Refine empty' is empty: a start mesh needs 1 to "
                                               f"{MAX_INIT_TRIANGLES} triangles, got 0"):
            bpy.ops.dreamfusion.texture_mesh()
        with pytest.raises(RuntimeError, match="'Refine empty' is not a DreamFusion result: use Generate From"):
            bpy.ops.dreamfusion.reprompt()
    finally:
        for obj in (camera, empty):
            data = obj.data
            bpy.data.objects.remove(obj)
            (bpy.data.cameras if data.id_type == "CAMERA" else bpy.data.meshes).remove(data)
    session = _session()
    assert session.backend is None and session.client is None and not session.pending_submits
    assert len(scene.dreamfusion.jobs) == 0 and set(bpy.data.objects.keys()) == objects_before


def test_generate_streams_meshes_into_one_object(addon, tmp_path):
    settings = bpy.context.scene.dreamfusion.settings
    settings.texture_size = "512"  # the Output sub-panel's menu
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}  # starts the backend; the job goes out once it listens
    first = tick_until(lambda: job() is not None and job().object is not None and job().object)
    mesh_pointer, meshes_before = first.data.as_pointer(), len(bpy.data.meshes)
    seen_steps, changed = {first["dreamfusion_step"]}, []
    previous = _positions(first)

    def watch_updates():
        obj = job().object
        if obj["dreamfusion_step"] not in seen_steps:
            seen_steps.add(obj["dreamfusion_step"])
            now = _positions(obj)
            changed.append(now.shape != previous.shape or not np.array_equal(now, previous))
            assert obj.data.as_pointer() == mesh_pointer and len(bpy.data.meshes) == meshes_before

    tick_until(lambda: job().state in ("finished", "failed"), on_tick=watch_updates)
    settings.texture_size = "0"
    item = job()
    assert item.state == "finished", item.reason
    assert len(seen_steps) >= 2 and any(changed), f"updates seen at steps {sorted(seen_steps)}"
    obj = item.object
    assert obj.name.startswith("a red cube") and obj.users_collection[0].name == "DreamFusion"
    assert len(obj.data.vertices) > 0
    assert obj.data.color_attributes.active_color_name == "albedo"
    assert obj.data.color_attributes.default_color_name == "albedo"
    assert obj.data.color_attributes["albedo"].data_type == "BYTE_COLOR"

    # The scene holds exactly the backend's final mesh, fetched here by an independent client.
    with BackendClient(_session().client.address) as other:
        final = other.request(other.result(item.job_id), timeout=30)
    assert final.TYPE == "finished"
    np.testing.assert_array_equal(_positions(obj), final.mesh.positions)
    np.testing.assert_array_equal(_albedo(obj), final.mesh.colors)

    # The texture comes a tick or more later (encoded off the main thread): UVs, a packed image named after the
    # job, of the size asked for, in the object's own material, which shows it.
    tick_until(lambda: obj.data.uv_layers.get("UVMap") is not None)
    uvs = np.empty(len(obj.data.loops) * 2, np.float32)
    obj.data.uv_layers["UVMap"].data.foreach_get("uv", uvs)
    np.testing.assert_array_equal(uvs.reshape(-1, 2), final.texture.uvs)
    material = obj.data.materials[0]
    assert material.name == f"DreamFusion {item.job_id}"
    (node,) = [n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"]
    assert any(link.from_node == node and link.to_socket.name == "Base Color" for link in material.node_tree.links)
    image = node.image
    assert image.name == f"DreamFusion {item.job_id} albedo" and image.packed_file is not None
    assert tuple(image.size) == (512, 512)
    pixels = np.empty(512 * 512 * 4, np.float32)
    image.pixels.foreach_get(pixels)
    np.testing.assert_allclose(np.flipud(pixels.reshape(512, 512, 4))[..., :3] * 255, final.texture.image, atol=0.5)
    # Saved and opened again (in another Blender), the image is still in the file.
    blend = tmp_path / "textured.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    check = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); i = bpy.data.images[sys.argv[2]]; "
             "print('IMAGE', i.packed_file is not None, tuple(i.size))")
    reopened = subprocess.run([sys.executable, "-c", check, str(blend), image.name], capture_output=True,
                              text=True, timeout=120)
    assert "IMAGE True (512, 512)" in reopened.stdout, reopened.stdout[-2000:] + reopened.stderr[-2000:]

    spec = json.loads(obj["dreamfusion_spec"])
    assert spec["prompt"] == "a red cube" and spec["steps"] == 40 and spec["seed"] == 3
    assert obj["dreamfusion_job_id"] == item.job_id and obj["dreamfusion_step"] == 40
    assert obj["dreamfusion_model"] == bpy.context.scene.dreamfusion.settings.model
    # The history entry: the whole JobSpec, seed, model, time taken, and the newest preview as its thumbnail.
    assert json.loads(item.spec_json) == spec and item.seed == "3" and item.model == spec["model"]
    assert item.elapsed > 0 and item.created > 0
    assert item.thumbnail is not None and item.thumbnail.name == f"DreamFusion {item.job_id}"
    assert 0 < min(item.thumbnail.size) <= max(item.thumbnail.size) <= 128


def test_export_writes_a_glb_with_its_texture_or_its_vertex_colours(addon, tmp_path):
    import struct

    import trimesh

    state = bpy.context.scene.dreamfusion
    state.active_job_index = len(state.jobs) - 1  # clicking the job selects its object
    assert bpy.context.view_layer.objects.active == job().object
    out = tmp_path / "result.glb"
    assert bpy.ops.dreamfusion.export(filepath=str(out)) == {"FINISHED"}
    assert len(trimesh.load(out, force="mesh").vertices) > 0

    def document(path):
        data = path.read_bytes()
        return json.loads(data[20:20 + struct.unpack_from("<I", data, 12)[0]])  # the GLB's JSON chunk

    gltf = document(out)
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    assert gltf["images"] and "TEXCOORD_0" in gltf["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" not in gltf["meshes"][0]["primitives"][0]["attributes"]  # glTF would multiply the two
    # An object with vertex colours only exports them as COLOR_0.
    from dreamfusion import scene_update

    plain = job().object.copy()
    plain.data = job().object.data.copy()
    plain.data.materials.clear()
    plain.data.materials.append(scene_update.ensure_material())
    bpy.context.scene.collection.objects.link(plain)
    try:
        scene_update.export_glb(bpy.context, plain, str(tmp_path / "plain.glb"))
    finally:
        bpy.data.objects.remove(plain)
    assert "COLOR_0" in document(tmp_path / "plain.glb")["meshes"][0]["primitives"][0]["attributes"]


def _refinement_ended(jobs_before: int):
    """For tick_until: the refinement's job-list entry once it ended, or why the backend refused it."""
    session, jobs = _session(), bpy.context.scene.dreamfusion.jobs
    if session.tracker.submitting:
        return None  # not answered yet
    if len(jobs) == jobs_before:
        return "refused: " + " | ".join(session.notices[-2:])
    return jobs[-1] if jobs[-1].state in ("finished", "failed") else None


def _status(job_id: str):
    with BackendClient(_session().client.address) as other:
        final = other.request(other.result(job_id), timeout=30)
        info = other.request(other.status(job_id), timeout=30).jobs[0]
    return final, info


def test_continue_makes_a_new_object_that_names_its_parent_and_leaves_the_parent(addon):
    state = bpy.context.scene.dreamfusion
    parent_item = next(j for j in state.jobs if j.state == "finished")
    parent = parent_item.object
    parent.location = (3.0, 0.0, 0.0)  # moved since it finished: the continuation lands where it is now
    bpy.context.view_layer.update()
    before, count = _positions(parent).copy(), len(state.jobs)
    bpy.context.view_layer.objects.active = parent
    state.refine_steps, state.refine_lock_geometry = 4, False
    assert bpy.ops.dreamfusion.continue_job() == {"FINISHED"}
    new = bpy.context.view_layer.objects.active
    assert new != parent and new["dreamfusion_parent_job"] == parent_item.job_id
    assert new.users_collection[0].name == "DreamFusion" and new.name.startswith("a red cube")
    assert np.allclose(np.array(new.matrix_world), np.array(parent.matrix_world), atol=1e-6)
    assert parent.hide_get() and not new.hide_get()  # one surface to look at; Alt H brings the parent back
    item = tick_until(lambda: _refinement_ended(count))
    assert not isinstance(item, str), item
    assert item.state == "finished", item.reason
    assert item.parent_job == parent_item.job_id and item.object == new
    assert item.step == item.steps == parent_item.step + 4
    spec = json.loads(new["dreamfusion_spec"])
    # (The backend may record the checkpoint it resolved the parent's id to.)
    assert (spec["init"], spec["steps"]) == ("checkpoint", item.steps) and parent_item.job_id in spec["init_from"]
    np.testing.assert_array_equal(_positions(parent), before)  # the source is untouched
    final, info = _status(item.job_id)
    # A job from the blob streams in the world frame at the origin: the new object holds the wire's positions.
    np.testing.assert_array_equal(_positions(new), final.mesh.positions)
    np.testing.assert_array_equal(_albedo(new), final.mesh.colors)
    assert info.parent == parent_item.job_id  # the backend records the lineage too
    parent.hide_set(False)


def test_texture_this_mesh_paints_a_copy_in_place_and_keeps_its_shape(addon):
    from mathutils import Matrix

    state = bpy.context.scene.dreamfusion
    settings = state.settings
    settings.steps, settings.stream_every, settings.prompt = 4, 2, "a red cube"
    bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=0.5)
    source = bpy.context.active_object
    source.name = "Artist sphere"
    source.matrix_world = Matrix.LocRotScale((0.2, -0.1, 0.3), None, (0.8, 1.0, 1.2))
    bpy.context.view_layer.update()
    local, count = _positions(source).copy(), len(source.data.vertices)
    world = np.array([source.matrix_world @ v.co for v in source.data.vertices], np.float32)
    jobs_before = len(state.jobs)
    assert bpy.ops.dreamfusion.texture_mesh() == {"FINISHED"}
    new = bpy.context.view_layer.objects.active
    assert new != source and new["dreamfusion_source_object"] == "Artist sphere"
    assert new["dreamfusion_keep_geometry"] and len(new.data.vertices) == count
    assert (_albedo(new) == (128, 128, 128, 255)).all()  # what was sent, until the first colours arrive
    mesh_pointer = new.data.as_pointer()

    def geometry_kept():
        if len(state.jobs) > jobs_before:  # accepted (a refused one takes its object away)
            assert new.data.as_pointer() == mesh_pointer and len(new.data.vertices) == count
            np.testing.assert_array_equal(_positions(new), local)  # colour-only updates: the copy keeps its shape

    item = tick_until(lambda: _refinement_ended(jobs_before), on_tick=geometry_kept)
    assert not isinstance(item, str), item
    assert item.state == "finished", item.reason
    assert item.source_object == "Artist sphere" and item.keep_geometry and item.object == new
    final, _ = _status(item.job_id)
    # The backend kept the mesh it was sent (in the world frame) and painted it.
    assert final.mesh.vertex_count == count
    np.testing.assert_allclose(final.mesh.positions, world, atol=1e-4)
    np.testing.assert_array_equal(_albedo(new), final.mesh.colors)
    assert new.data.color_attributes.active_color_name == "albedo"
    # The source is as it was: same vertices, nothing written into it.
    assert len(source.data.vertices) == count and "albedo" not in source.data.color_attributes
    np.testing.assert_array_equal(_positions(source), local)
    assert "dreamfusion_job_id" not in source
    source.hide_set(False)

    # A refinement the backend refuses takes its new object with it and shows its source again.
    model, objects = settings.model, set(bpy.data.objects.keys())
    settings.model = "/no/such/model/folder"
    try:
        bpy.context.view_layer.objects.active = source
        count = len(state.jobs)
        assert bpy.ops.dreamfusion.texture_mesh() == {"FINISHED"}
        assert source.hide_get() and len(bpy.data.objects) == len(objects) + 1
        refused = tick_until(lambda: _refinement_ended(count))
        assert isinstance(refused, str) and "refused (model)" in refused, refused  # (it names no server folder)
        assert set(bpy.data.objects.keys()) == objects and not source.hide_get()
    finally:
        settings.model = model


def test_texture_this_mesh_bakes_into_the_artists_own_uvs(addon):
    state = bpy.context.scene.dreamfusion
    settings = state.settings
    before = settings.steps, settings.stream_every
    settings.steps, settings.stream_every, settings.prompt, settings.texture_size = 2, 0, "a red cube", "512"
    try:
        bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=0.5)  # quads and triangles, UVs
        source = bpy.context.active_object
        mesh = source.data
        mesh.calc_loop_triangles()
        loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        per_loop = np.empty(len(mesh.loops) * 2, np.float32)
        mesh.uv_layers.active.data.foreach_get("uv", per_loop)
        expected = per_loop.reshape(-1, 2)[loops]  # the artist's UV of every triangle corner, as sent
        jobs_before = len(state.jobs)
        assert bpy.ops.dreamfusion.texture_mesh() == {"FINISHED"}
        new = bpy.context.view_layer.objects.active
        item = tick_until(lambda: _refinement_ended(jobs_before))
        assert not isinstance(item, str) and item.state == "finished", item
        final, _ = _status(item.job_id)
        np.testing.assert_array_equal(final.texture.uvs, expected)  # no new atlas: the artist's layout
        tick_until(lambda: scene_image(new) is not None)
        got = np.empty(len(new.data.loops) * 2, np.float32)
        new.data.uv_layers["UVMap"].data.foreach_get("uv", got)
        np.testing.assert_array_equal(got.reshape(-1, 2), expected)
        assert tuple(scene_image(new).size) == (512, 512)
        source.hide_set(False)
    finally:
        settings.texture_size = "0"
        settings.steps, settings.stream_every = before


def scene_image(obj):
    from dreamfusion import scene_update

    return scene_update.textured_image(obj)


def test_cancel_stops_the_running_job(addon):
    bpy.context.scene.dreamfusion.settings.steps = 5000
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
    tick_until(lambda: job().state == "running" and job().step > 0)
    assert bpy.ops.dreamfusion.cancel() == {"FINISHED"}
    tick_until(lambda: job().state == "cancelled")
    assert job().step < 5000 and not bpy.ops.dreamfusion.cancel.poll()


def test_backend_lost_keeps_the_mesh_and_reconnect_resumes(addon):
    bpy.context.scene.dreamfusion.settings.steps = 5000
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
    obj = tick_until(lambda: job().state == "running" and job().object is not None and job().object)
    vertices = len(obj.data.vertices)
    session = _session()
    session.backend.process.send_signal(signal.SIGKILL)
    tick_until(lambda: job().state == "interrupted")
    assert session.status().state == "error" and "exited" in session.status().text
    assert len(job().object.data.vertices) == vertices, "the last mesh stays in the scene"

    assert bpy.ops.dreamfusion.start_backend() == {"FINISHED"}  # same job folder, new port
    tick_until(lambda: session.connected)
    step_before = job().step
    bpy.context.scene.dreamfusion.active_job_index = len(bpy.context.scene.dreamfusion.jobs) - 1
    tick_until(lambda: bpy.ops.dreamfusion.resume.poll())
    assert bpy.ops.dreamfusion.resume() == {"FINISHED"}
    tick_until(lambda: job().state == "running" and job().step > step_before)
    assert bpy.ops.dreamfusion.cancel() == {"FINISHED"}
    tick_until(lambda: job().state == "cancelled")


def test_remove_job_takes_it_off_the_list_and_can_delete_it_on_the_backend(addon):
    state = bpy.context.scene.dreamfusion
    jobs_dir = Path(bpy.context.preferences.addons["dreamfusion"].preferences.data_dir) / "jobs"
    count = len(state.jobs)
    state.active_job_index = 0
    kept = state.jobs[0].job_id
    assert bpy.ops.dreamfusion.remove_job() == {"FINISHED"}  # the list only: the backend keeps the job
    assert len(state.jobs) == count - 1 and kept not in [j.job_id for j in state.jobs]
    assert (jobs_dir / kept).is_dir()
    state.active_job_index = len(state.jobs) - 1
    doomed = state.jobs[state.active_job_index].job_id
    assert (jobs_dir / doomed).is_dir()
    assert bpy.ops.dreamfusion.remove_job(delete_on_backend=True) == {"FINISHED"}
    assert len(state.jobs) == count - 2
    session = _session()
    tick_until(lambda: not (jobs_dir / doomed).exists())
    tick_until(lambda: any(f"deleted job {doomed}" in n for n in session.notices))
    assert doomed not in session.tracker.jobs


def test_candidates_stand_in_a_row_and_the_unchosen_go_after_the_choice(addon):
    from dreamfusion import scene_update

    settings, prefs = bpy.context.scene.dreamfusion.settings, bpy.context.preferences.addons["dreamfusion"].preferences
    settings.candidates, settings.select_at, settings.steps = 3, 0.5, 40
    try:
        assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
        tick_until(lambda: job() is not None and job().job_id
                   and len(scene_update.candidate_objects(job().job_id)) == 3)
        job_id = job().job_id
        row = scene_update.candidate_objects(job_id)
        view = _session().tracker.jobs[job_id]
        for index, obj in row.items():  # beside the job's place, labelled with index and seed
            assert f"candidate {index} (seed {view.candidates[index]})" in obj.name
            assert obj.matrix_world.translation.x == pytest.approx((index + 1) * scene_update.CANDIDATE_SPACING)
            assert len(obj.data.vertices) > 0 and obj.get(scene_update.JOB_PROPERTY) is None
        tick_until(lambda: job().state in ("finished", "failed"))
        assert job().state == "finished", job().reason
        assert view.chosen_by == "judge" and len(view.scores) == 3
        assert scene_update.candidate_objects(job_id) == {}  # the others went; the chosen one became the job's
        with BackendClient(_session().client.address) as other:
            final = other.request(other.result(job_id), timeout=30)
        np.testing.assert_array_equal(_positions(job().object), final.mesh.positions)

        # The artist's pick before the choice, with the unchosen kept hidden (a preference).
        prefs.keep_candidates = True
        settings.select_at, settings.steps = 0.9, 400
        assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
        tick_until(lambda: job() is not None and job().job_id
                   and len(scene_update.candidate_objects(job().job_id)) == 3)
        job_id = job().job_id
        assert bpy.ops.dreamfusion.pick_candidate(job_id=job_id, candidate=2) == {"FINISHED"}
        view = _session().tracker.jobs[job_id]
        tick_until(lambda: view.chosen is not None)
        assert (view.chosen, view.chosen_by) == (2, "artist")
        kept = scene_update.candidate_objects(job_id)
        assert sorted(kept) == [0, 1] and all(obj.hide_get() for obj in kept.values())
        assert all(scene_update.CANDIDATE_SCORE_PROPERTY in obj for obj in kept.values())
        assert all(obj.name.endswith(f"score {view.scores[i]:+.3f}") for i, obj in kept.items())
        tick_until(lambda: job().object is not None and len(job().object.data.vertices) > 0)
        assert bpy.ops.dreamfusion.cancel() == {"FINISHED"}
        tick_until(lambda: job().state == "cancelled")
        with pytest.raises(RuntimeError, match="has no candidates to pick from now"):  # reported, nothing sent
            bpy.ops.dreamfusion.pick_candidate(job_id=job_id, candidate=0)
    finally:
        settings.candidates, settings.select_at, settings.steps = 1, 0.25, 40
        prefs.keep_candidates = False


def test_disable_removes_the_timer_and_stops_the_backend(addon):
    from dreamfusion import client_loop

    process = _session().backend.process
    disable()
    assert not bpy.app.timers.is_registered(client_loop.tick)
    assert process.poll() is not None, "the backend the add-on launched must stop with it"
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion")

