"""What a new artist hits first in the add-on (issue #32), in the real `bpy` module.

The extension is assembled as build_addon.py does and enabled through addon_utils. Where the add-on has to talk
to a backend, it talks over a real ZeroMQ socket to `ScriptedBackend`: a ROUTER on loopback that speaks the
protocol (`shared.transport`, `shared.messages`) and answers exactly as each test says. The add-on's own client,
job tracker, timer tick and scene code run unchanged; the peer only makes the backend's side deterministic (a
second job queued behind a running one, a preview of a chosen colour), and costs no model or training.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_addon  # noqa: E402
from tests.helpers.addon import BACKEND, tick_until  # noqa: E402

from blender_dreamfusion.addon_core.glb import glb_vertex_count  # noqa: E402
from blender_dreamfusion.addon_core.panel_text import progress_job_index, wrap  # noqa: E402
from blender_dreamfusion.shared import MeshData  # noqa: E402
from blender_dreamfusion.shared.messages import (CLIENT_TYPES, Accepted, Cancelled, Image,  # noqa: E402
                                                 Progress, Submit, Update, Welcome)
from blender_dreamfusion.shared.transport import recv_routed, send_routed  # noqa: E402


def _raise(exc):
    raise exc


@pytest.fixture
def addon(tmp_path, monkeypatch):
    import addon_utils

    build_addon.assemble(tmp_path / "dreamfusion")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "dreamfusion" or m.startswith("dreamfusion.")]:
        del sys.modules[name]
    module = addon_utils.enable("dreamfusion", default_set=True, handle_error=_raise)
    assert module is not None
    objects_before, images_before = set(bpy.data.objects.keys()), set(bpy.data.images.keys())
    state = bpy.context.scene.dreamfusion
    state.jobs.clear()
    state.active_job_index = -1
    yield module
    bpy.context.scene.dreamfusion.jobs.clear()
    addon_utils.disable("dreamfusion", default_set=True, handle_error=_raise)
    for name in set(bpy.data.objects.keys()) - objects_before:
        bpy.data.objects.remove(bpy.data.objects[name])
    for name in set(bpy.data.images.keys()) - images_before:  # the thumbnails of the jobs made here
        bpy.data.images.remove(bpy.data.images[name])


class ScriptedBackend:
    """A backend's socket, driven by the test: it answers `hello` with `welcome` and sends what it is told."""

    def __init__(self) -> None:
        import zmq

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.peer: bytes | None = None

    def receive(self, kind: type, timeout: float = 20.0):
        """The next message of class `kind` from the add-on (others are answered or passed over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.socket.poll(50):
                continue
            self.peer, message = recv_routed(self.socket, accept=CLIENT_TYPES)
            if message.TYPE == "hello":
                self.send(Welcome(server="scripted", request_id=message.request_id, heartbeat_interval=60.0))
            if isinstance(message, kind):
                return message
        raise AssertionError(f"the add-on sent no {kind.__name__} within {timeout} s")

    def send(self, message) -> None:
        assert self.peer is not None, "no client has spoken yet"
        send_routed(self.socket, self.peer, message)

    def close(self) -> None:
        self.socket.close()
        self.context.term()


@pytest.fixture
def backend(addon):
    """The scripted backend, set as the add-on's remote backend."""
    peer = ScriptedBackend()
    prefs = bpy.context.preferences.addons["dreamfusion"].preferences
    prefs.backend_mode, prefs.address = "REMOTE", peer.endpoint
    yield peer
    addon.addon_core.session.SESSION.disconnect()
    peer.close()


def _accept(peer: ScriptedBackend, submit: Submit, job_id: str) -> None:
    peer.send(Accepted(job_id=job_id, spec=submit.spec, request_id=submit.request_id))


def _item(job_id: str):
    return next((j for j in bpy.context.scene.dreamfusion.jobs if j.job_id == job_id), None)


def _sphere(name: str):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=8, ring_count=5, radius=0.5)
    obj = bpy.context.active_object
    obj.name = name
    return obj


def _result(addon, job_id: str, vertices: int = 30):
    """A finished job's result object and its list entry, as the timer leaves them."""
    rng = np.random.default_rng(len(job_id))
    mesh = MeshData.coerce(rng.normal(size=(vertices, 3)).astype(np.float32),
                           rng.integers(0, vertices, (2 * vertices, 3)), rng.integers(0, 256, (vertices, 4), np.uint8))
    obj = addon.scene_update.apply_mesh(bpy.context.scene, job_id, "a teapot", mesh, 40, "toy-shapes")
    item = bpy.context.scene.dreamfusion.jobs.add()
    item.job_id, item.state, item.prompt, item.object = job_id, "finished", "a teapot", obj
    return obj, item


# --- 1. Export .glb works on any result, and never reports an empty file as done ---------------------------------

def test_export_writes_a_hidden_or_unselected_result_and_never_an_empty_file(addon, tmp_path):
    import trimesh

    state = bpy.context.scene.dreamfusion
    obj, _ = _result(addon, "j-export", vertices=30)
    other = _sphere("Someone else's sphere")  # selected and active: the exporter's selection must not matter
    state.active_job_index = len(state.jobs) - 1
    view_layer = bpy.context.view_layer
    collection = view_layer.layer_collection.children["DreamFusion"]
    hidings = {"hidden (a refinement's source)": (lambda: obj.hide_set(True), lambda: obj.hide_set(False)),
               "disabled in viewports": (lambda: setattr(obj, "hide_viewport", True),
                                         lambda: setattr(obj, "hide_viewport", False)),
               "in an excluded collection": (lambda: setattr(collection, "exclude", True),
                                             lambda: setattr(collection, "exclude", False))}
    for how, (hide, show) in hidings.items():
        hide()
        obj.select_set(False)
        other.select_set(True)
        view_layer.objects.active = other
        try:
            out = tmp_path / f"{how.split()[0]}.glb"
            assert bpy.ops.dreamfusion.export(filepath=str(out)) == {"FINISHED"}, how
        finally:
            show()
        assert glb_vertex_count(out.read_bytes()) == 30, how
        assert len(trimesh.load(out, force="mesh").vertices) == 30, how  # the result alone, not the sphere
    assert not [c.name for c in bpy.data.collections if c.name.startswith("DreamFusion export")]  # none left

    # What the panel used to write for a hidden result: the exporter's valid, empty 132-byte file.
    for o in view_layer.objects:
        o.select_set(False)
    empty = tmp_path / "empty.glb"
    bpy.ops.export_scene.gltf(filepath=str(empty), export_format="GLB", use_selection=True)
    assert empty.stat().st_size < 200 and glb_vertex_count(empty.read_bytes()) == 0
    with pytest.raises(ValueError, match="not a glTF binary"):
        glb_vertex_count(b"PK\x03\x04 not a glb at all")

    # A result the exporter writes no mesh for (loose vertices, no faces) is an error, and its empty file goes.
    loose = bpy.data.meshes.new("loose")
    loose.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [])
    obj.data = loose
    out = tmp_path / "loose.glb"
    with pytest.raises(RuntimeError, match="the exporter wrote no mesh for .*; the empty file was removed"):
        bpy.ops.dreamfusion.export(filepath=str(out))
    assert not out.exists()
    # A result with no mesh yet is refused before anything is written.
    obj.data = bpy.data.meshes.new("nothing yet")
    with pytest.raises(RuntimeError, match="has no mesh to export"):
        bpy.ops.dreamfusion.export(filepath=str(tmp_path / "none.glb"))
    assert not (tmp_path / "none.glb").exists()


# --- 2. An empty prompt with a hint; a new seed per Generate unless locked --------------------------------------

def test_the_prompt_starts_empty_and_generate_draws_a_seed_per_job_unless_locked(addon, backend):
    state = bpy.context.scene.dreamfusion
    settings = state.settings
    fresh = bpy.data.scenes.new("Fresh")
    try:
        assert fresh.dreamfusion.settings.prompt == "" and not fresh.dreamfusion.lock_seed
    finally:
        bpy.data.scenes.remove(fresh)
    assert addon.properties.PROMPT_HINT  # the panel's placeholder in the empty field
    settings.prompt = "  "
    with pytest.raises(RuntimeError, match='type a prompt first: what to make, e.g. "a ceramic teapot"'):
        bpy.ops.dreamfusion.generate()
    assert addon.addon_core.session.SESSION.client is None, "an empty prompt must not connect or send anything"

    settings.prompt, settings.seed, state.lock_seed = "a teapot", 7, False
    sent = []
    for job_id in ("j-seed-1", "j-seed-2"):
        assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
        submit = backend.receive(Submit)
        sent.append(submit.spec.seed)
        assert settings.seed == submit.spec.seed, "the panel shows the seed the job was sent with"
        _accept(backend, submit, job_id)
        item = tick_until(lambda: _item(job_id))
        assert item.seed == str(submit.spec.seed)  # the Jobs entry records it, so Recall repeats the run
    assert len(set(sent)) == 2 and 7 not in sent, sent

    state.lock_seed = True  # locked: the seed shown is the seed sent, every time
    settings.seed = 1234
    for _ in range(2):
        assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
        assert backend.receive(Submit).spec.seed == 1234 and settings.seed == 1234


# --- 3. A refinement's hidden source stays usable ---------------------------------------------------------------

def test_a_source_hidden_by_a_refinement_can_be_refined_again(addon, backend):
    settings = bpy.context.scene.dreamfusion.settings
    settings.prompt = "a green sphere"
    source = _sphere("Artist sphere")
    assert bpy.ops.dreamfusion.texture_mesh() == {"FINISHED"}
    first = backend.receive(Submit)
    assert first.spec.init == "mesh" and first.spec.lock_geometry
    assert source.hide_get() and bpy.context.view_layer.objects.active != source
    # The artist clicks the source in the outliner: the view layer's active object. The 3D view leaves a hidden
    # object out of context.active_object, which is what the override gives the operators here.
    bpy.context.view_layer.objects.active = source
    with bpy.context.temp_override(active_object=None):
        assert addon.refine.active_source(bpy.context) == source  # what the Refine panel shows
        assert bpy.ops.dreamfusion.refine_mesh() == {"FINISHED"}
    second = backend.receive(Submit)
    assert second.spec.init == "mesh" and not second.spec.lock_geometry
    assert second.init_mesh.vertex_count == first.init_mesh.vertex_count
    new = bpy.context.view_layer.objects.active
    assert new != source and new["dreamfusion_source_object"] == "Artist sphere"


# --- 4. The progress box shows the selected job, else the running one --------------------------------------------

def test_the_progress_box_follows_the_selected_or_the_running_job(addon, backend):
    assert progress_job_index([], -1) == -1
    assert progress_job_index(["running", "queued"], -1) == 0
    assert progress_job_index(["finished", "running", "cancelled"], -1) == 1
    assert progress_job_index(["finished", "queued", "failed"], -1) == 1
    assert progress_job_index(["finished", "failed"], -1) == 1
    assert progress_job_index(["running", "queued"], 1) == 1  # the artist's choice wins

    state = bpy.context.scene.dreamfusion
    state.settings.prompt, state.lock_seed = "a teapot", False
    for job_id in ("j-running", "j-second"):
        assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
        _accept(backend, backend.receive(Submit), job_id)
        tick_until(lambda: _item(job_id))
    backend.send(Progress(job_id="j-running", step=12, steps=100, it_per_s=4.0, eta=22.0))
    backend.send(Progress(job_id="j-second", step=0, steps=100, phase="queued", queue_position=1))
    tick_until(lambda: _item("j-running").state == "running" and _item("j-running").step == 12)
    state.active_job_index = -1
    shown = addon.panel.current_job(bpy.context)
    assert shown.job_id == "j-running", "a queued second job must not take the running job's ETA off the panel"
    backend.send(Cancelled(job_id="j-second"))
    tick_until(lambda: _item("j-second").state == "cancelled")
    assert addon.panel.current_job(bpy.context).job_id == "j-running"
    state.active_job_index = 1
    assert addon.panel.current_job(bpy.context).job_id == "j-second"


# --- 5. The overlay says why it draws nothing -------------------------------------------------------------------

def test_the_overlay_says_why_it_draws_nothing_while_a_job_runs(addon):
    overlay, scene = addon.overlay, bpy.context.scene
    state = scene.dreamfusion
    assert overlay.hidden_reason(scene) == ""  # off: nothing to explain
    state.overlay_cameras = True
    assert overlay.hidden_reason(scene) == "" and overlay.visible_parts(scene) == (True, False)
    job = state.jobs.add()
    job.job_id, job.state = "j-overlay", "running"
    assert overlay.visible_parts(scene) == (False, False)
    why = overlay.hidden_reason(scene)
    assert "while a job is running" in why and "Keep While Running" in why
    state.overlay_while_running = True
    assert overlay.hidden_reason(scene) == "" and overlay.visible_parts(scene) == (True, False)
    state.overlay_while_running, state.overlay_cameras = False, False
    assert overlay.hidden_reason(scene) == ""


# --- 6. The Jobs-list thumbnail follows every preview -----------------------------------------------------------

def _preview_rgb(preview, size: str = "image") -> np.ndarray:
    w, h = getattr(preview, f"{size}_size")
    out = np.empty(w * h * 4, np.float32)
    getattr(preview, f"{size}_pixels_float").foreach_get(out)
    return np.round(out.reshape(h, w, 4)[::-1, :, :3] * 255).astype(np.uint8)


def test_the_thumbnail_follows_the_newest_preview(addon, backend):
    state = bpy.context.scene.dreamfusion
    state.settings.prompt = "a teapot"
    assert bpy.ops.dreamfusion.generate() == {"FINISHED"}
    _accept(backend, backend.receive(Submit), "j-thumb")
    rng = np.random.default_rng(2)
    mesh = MeshData.coerce(rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 20, (30, 3)),
                           rng.integers(0, 256, (20, 4), np.uint8))
    for step, colour in ((5, (200, 30, 30)), (10, (20, 40, 220)), (15, (10, 200, 60))):
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[...] = colour
        pixels[:8, :8] = 255  # a corner mark: the picture the right way up
        backend.send(Update(job_id="j-thumb", step=step, steps=100, mesh=mesh, preview=Image(pixels)))
        item = tick_until(lambda: (i := _item("j-thumb")) is not None and i.object is not None
                          and i.object["dreamfusion_step"] == step and i)
        # What the Jobs list and the progress box draw is the image's preview (layout.icon(image)).
        preview = item.thumbnail.preview
        assert preview is not None, "the thumbnail has no preview to draw"
        assert np.array_equal(_preview_rgb(preview), pixels), f"the thumbnail still shows an older preview at {step}"
        icon = _preview_rgb(preview, "icon")
        assert max(icon.shape[:2]) <= 32 and tuple(icon[-1, -1]) == colour and tuple(icon[0, 0]) == (255, 255, 255)
    assert len([i for i in bpy.data.images if i.name.startswith("DreamFusion j-thumb")]) == 1


# --- 7. Redo-panel titles -----------------------------------------------------------------------------------------

def test_each_refine_button_has_its_own_operator_and_redo_title(addon):
    # The redo panel is titled after the operator; a button's own text does not reach it.
    assert bpy.ops.dreamfusion.refine_mesh.get_rna_type().name == "Generate From This Mesh"
    assert bpy.ops.dreamfusion.texture_mesh.get_rna_type().name == "Texture This Mesh"
    # Nothing in Generate From's redo panel may turn it into texturing under its own title.
    assert bpy.ops.dreamfusion.refine_mesh.get_rna_type().properties["lock_geometry"].is_hidden
    assert [p.identifier for p in bpy.ops.dreamfusion.texture_mesh.get_rna_type().properties
            if not p.is_hidden and p.identifier != "rna_type"] == []
    labels = {"refine_mesh": "Generate From This Mesh", "texture_mesh": "Texture This Mesh",
              "continue_job": "Continue", "reprompt": "Re-prompt"}
    for name, label in labels.items():
        assert getattr(bpy.ops.dreamfusion, name).get_rna_type().name == label


# --- 8. The status line refreshes once the preference is fixed ----------------------------------------------------

def test_the_status_line_refreshes_after_the_backend_preference_is_fixed(addon):
    session = addon.addon_core.session.SESSION
    prefs = bpy.context.preferences.addons["dreamfusion"].preferences
    prefs.backend_mode = "LOCAL"
    prefs.backend_executable = "/no/such/folder/dreamfusion-backend"
    with pytest.raises(RuntimeError):
        bpy.ops.dreamfusion.start_backend()
    status = session.status()
    assert status.state == "error" and "/no/such/folder/dreamfusion-backend" in status.text
    # The whole error is shown, wrapped to the sidebar's width rather than cut off with "…".
    lines = wrap(status.text, 300)
    assert len(lines) > 1 and " ".join(lines) == " ".join(status.text.split())
    assert all(len(line) <= 37 for line in lines)
    prefs.backend_executable = str(BACKEND)  # fixed
    assert session.status().state == "off", session.status()


# --- 9. numpy: a helpful message where Blender's Python lacks it ------------------------------------------------

def test_register_says_how_to_get_numpy_when_blenders_python_lacks_it(tmp_path, monkeypatch):
    build_addon.assemble(tmp_path / "dreamfusion")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "dreamfusion" or m.startswith("dreamfusion.")]:
        del sys.modules[name]
    module = importlib.import_module("dreamfusion")
    monkeypatch.setitem(sys.modules, "numpy", None)  # a distribution's Blender: its Python has no numpy
    with pytest.raises(ImportError, match=r"needs numpy.*sudo apt install python3-numpy") as caught:
        module.register()
    assert caught.value.name == "numpy"
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion"), "nothing may be left half-registered"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "apt install python3-numpy" in readme
