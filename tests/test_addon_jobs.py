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
    settings.render_resolution = 32
    settings.mesh_resolution = 32
    settings.views_per_step = 1
    settings.stream_every = 5
    settings.steps = 40
    yield module
    if "dreamfusion" in bpy.context.preferences.addons:
        disable()


def _session():
    from dreamfusion.session import SESSION

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
    with pytest.raises(RuntimeError, match="prompt .* is empty; allowed: non-empty text"):
        bpy.ops.dreamfusion.generate()
    settings.prompt = "a red cube"
    settings.camera_elevation = (60.0, 10.0)
    with pytest.raises(RuntimeError, match=r"camera_elevation .* has min > max; allowed: \[min, max\]"):
        bpy.ops.dreamfusion.generate()
    settings.camera_elevation = (-10.0, 90.0)
    session = _session()
    assert session.backend is None and session.client is None, "a refused job must not start anything"
    assert len(bpy.context.scene.dreamfusion.jobs) == 0


def test_generate_streams_meshes_into_one_object(addon):
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
    item = job()
    assert item.state == "finished", item.reason
    assert len(seen_steps) >= 2 and any(changed), f"updates seen at steps {sorted(seen_steps)}"
    obj = item.object
    assert obj.name.startswith("a red cube") and obj.users_collection[0].name == "DreamFusion"
    assert len(obj.data.vertices) > 0 and obj.data.materials[0].name == "DreamFusion Albedo"
    assert obj.data.color_attributes.active_color_name == "albedo"
    assert obj.data.color_attributes.default_color_name == "albedo"
    assert obj.data.color_attributes["albedo"].data_type == "BYTE_COLOR"

    # The scene holds exactly the backend's final mesh, fetched here by an independent client.
    with BackendClient(_session().client.address) as other:
        final = other.request(other.result(item.job_id), timeout=30)
    assert final.TYPE == "finished"
    np.testing.assert_array_equal(_positions(obj), final.mesh.positions)
    np.testing.assert_array_equal(_albedo(obj), final.mesh.colors)

    spec = json.loads(obj["dreamfusion_spec"])
    assert spec["prompt"] == "a red cube" and spec["steps"] == 40 and spec["seed"] == 3
    assert obj["dreamfusion_job_id"] == item.job_id and obj["dreamfusion_step"] == 40
    assert obj["dreamfusion_model"] == bpy.context.scene.dreamfusion.settings.model
    # The history entry: the whole JobSpec, seed, model, time taken, and the newest preview as its thumbnail.
    assert json.loads(item.spec_json) == spec and item.seed == "3" and item.model == spec["model"]
    assert item.elapsed > 0 and item.created > 0
    assert item.thumbnail is not None and item.thumbnail.name == f"DreamFusion {item.job_id}"
    assert 0 < min(item.thumbnail.size) <= max(item.thumbnail.size) <= 128


def test_export_writes_a_glb_with_vertex_colours(addon, tmp_path):
    import struct

    import trimesh

    state = bpy.context.scene.dreamfusion
    state.active_job_index = len(state.jobs) - 1  # clicking the job selects its object
    assert bpy.context.view_layer.objects.active == job().object
    out = tmp_path / "result.glb"
    assert bpy.ops.dreamfusion.export(filepath=str(out)) == {"FINISHED"}
    assert len(trimesh.load(out, force="mesh").vertices) > 0
    data = out.read_bytes()
    gltf = json.loads(data[20:20 + struct.unpack_from("<I", data, 12)[0]])  # the GLB's JSON chunk
    assert "COLOR_0" in gltf["meshes"][0]["primitives"][0]["attributes"]


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


def test_disable_removes_the_timer_and_stops_the_backend(addon):
    from dreamfusion import client_loop

    process = _session().backend.process
    disable()
    assert not bpy.app.timers.is_registered(client_loop.tick)
    assert process.poll() is not None, "the backend the add-on launched must stop with it"
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
