"""Refinement through a real server on 127.0.0.1: start meshes in `submit`, texture-only jobs, continuing and
re-prompting a finished job, and every malformed start mesh refused naming the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
import zmq

from blender_dreamfusion.backend.toy.quality import hue_error, shape_distances
from blender_dreamfusion.shared import (Accepted, Finished, JobSpec, MeshData, Progress, Rejected, StatusReply, Submit,
                                        Update, Welcome)
from blender_dreamfusion.shared.client import BackendClient
from blender_dreamfusion.shared.errors import BadBuffer
from blender_dreamfusion.shared.framing import decode, encode
from blender_dreamfusion.shared.mesh import MAX_INIT_TRIANGLES
from blender_dreamfusion.shared.recommended import builtin_recommendations
from blender_dreamfusion.shared.version import PROTOCOL_TAG
from tests.helpers.servers import ThreadServer, ended, events_until

GREY, RED = (128, 128, 128, 255), (200, 40, 40, 255)


@pytest.fixture
def server(tmp_path):
    running = ThreadServer(tmp_path / "data")
    yield running
    running.stop()


def toy_spec(**fields) -> JobSpec:
    return JobSpec.from_dict({**builtin_recommendations("toy-shapes"), "mesh_resolution": 64, **fields})


def cube(colour=GREY, size: float = 2.0, at=(3.0, 1.0, 0.5)) -> MeshData:
    """An artist's cube: 2 m, off the origin (the default cube, moved)."""
    box = trimesh.creation.box([size] * 3).subdivide().subdivide().subdivide()
    return MeshData.coerce(np.asarray(box.vertices) + at, box.faces, np.tile(np.array(colour, np.uint8),
                                                                              (len(box.vertices), 1)))


def test_a_submit_with_a_start_mesh_round_trips():
    mesh = cube()
    submit = Submit(spec=toy_spec(prompt="a red cube", init="mesh", lock_geometry=True), init_mesh=mesh,
                    request_id="r-1")
    back = decode(encode(submit))
    assert back == submit and back.init_mesh == mesh


@pytest.mark.slow
def test_texture_only_keeps_the_artists_mesh_and_paints_it(server):
    mesh = cube()
    spec = toy_spec(prompt="a red cube", init="mesh", lock_geometry=True, steps=150, stream_every=50, seed=21)
    with BackendClient(server.endpoint) as client:
        accepted = client.request(client.submit(spec, init_mesh=mesh))
        assert isinstance(accepted, Accepted) and accepted.spec.lock_geometry
        events = events_until(client, ended(accepted.job_id), timeout=900)
        finished = events[-1]
        assert isinstance(finished, Finished), finished
        phases = [e.phase for e in events if isinstance(e, Progress)]
        assert "fitting_mesh" in phases and phases.index("fitting_mesh") < phases.index("training")
        updates = [e for e in events if isinstance(e, Update)]
        assert [u.step for u in updates] == [10, 25, 50, 100]  # early meshes, then every stream_every
        # Streamed updates carry only colours, for the mesh the client sent.
        assert all(u.mesh is None and u.vertex_colors.vertex_count == mesh.vertex_count for u in updates)
        out = finished.mesh
        assert np.abs(out.positions - mesh.positions).max() <= 1e-6 * 2.0
        assert np.array_equal(out.triangles, mesh.triangles)
        assert hue_error(out, "red") < 30.0, out.colors[:, :3].mean(axis=0)

        # Continuing a locked job keeps its lock, whatever the new spec asks: still the very same mesh.
        more = client.request(client.submit(spec.replace(init="checkpoint", init_from=accepted.job_id,
                                                         lock_geometry=False, steps=152, stream_every=0)))
        assert isinstance(more, Accepted) and more.spec.lock_geometry
        again = events_until(client, ended(more.job_id), timeout=300)[-1]
        assert isinstance(again, Finished) and again.step == 152
        assert np.array_equal(again.mesh.positions, out.positions)


@pytest.mark.slow
def test_a_finished_red_cube_re_prompted_as_a_blue_cube(server):
    with BackendClient(server.endpoint) as client:
        # The parent: a red cube the artist made, taken in as a finished "a red cube" job.
        parent = client.request(client.submit(toy_spec(prompt="a red cube", init="mesh", steps=5, seed=31),
                                              init_mesh=cube(RED)))
        first = events_until(client, ended(parent.job_id), timeout=300)[-1]
        assert isinstance(first, Finished) and hue_error(first.mesh, "red") < 30.0
        # Re-prompted: more steps under a new prompt and seed.
        child = client.request(client.submit(toy_spec(prompt="a blue cube", init="checkpoint",
                                                      init_from=parent.job_id, steps=205, seed=32)))
        assert isinstance(child, Accepted), child
        assert child.spec.init_from.endswith("checkpoint.safetensors")
        finished = events_until(client, ended(child.job_id), timeout=900)[-1]
        assert isinstance(finished, Finished), finished
        distances = shape_distances(finished.mesh)
        assert min(distances, key=distances.get) == "cube", distances
        assert hue_error(finished.mesh, "blue") < 30.0, finished.mesh.colors[:, :3].mean(axis=0)
        # Where the artist's cube was, at its size.
        centre = (finished.mesh.positions.max(0) + finished.mesh.positions.min(0)) / 2
        assert np.abs(centre - (3.0, 1.0, 0.5)).max() < 0.2
        status = client.request(client.status(child.job_id))
        assert isinstance(status, StatusReply) and status.jobs[0].parent == parent.job_id


def test_a_mesh_start_needs_a_mesh_and_files_must_be_allowed(server, tmp_path):
    with BackendClient(server.endpoint) as client:
        for spec, field in [
            (toy_spec(prompt="a red cube", init="mesh"), "init_mesh"),
            (toy_spec(prompt="a red cube", init="mesh", init_from="/etc/passwd.glb"), "init_from"),
            (toy_spec(prompt="a red cube", init="mesh", init_from=str(tmp_path / "missing.glb")), "init_from"),
        ]:
            reply = client.request(client.submit(spec))
            assert isinstance(reply, Rejected) and reply.field == field, reply
        (tmp_path / "mesh.stl").write_text("solid")
        reply = client.request(client.submit(toy_spec(prompt="a red cube", init="mesh",
                                                      init_from=str(tmp_path / "mesh.stl"))))
        assert isinstance(reply, Rejected) and reply.field == "init_from" and ".glb" in reply.reason


def _submit_frames(spec: dict, positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> list[bytes]:
    """A submit's frames built by hand, so buffers can be what no MeshData would allow."""
    parts = [("init_positions", positions), ("init_triangles", triangles), ("init_colors", colors)]
    header = {"type": "submit", "spec": spec, "request_id": "bad-mesh",
              "buffers": [{"name": n, "dtype": {"f": "float32", "i": "int32", "u": "uint8"}[a.dtype.kind],
                           "shape": list(a.shape)} for n, a in parts]}
    return [PROTOCOL_TAG, json.dumps(header).encode(), *(a.tobytes() for _, a in parts)]


def test_every_malformed_start_mesh_is_refused_naming_the_field(server):
    spec = toy_spec(prompt="a red cube", init="mesh").to_dict()
    good = cube()
    p, t, c = np.array(good.positions), np.array(good.triangles), np.array(good.colors)
    nan = p.copy()
    nan[3, 1] = np.nan
    many = np.zeros((MAX_INIT_TRIANGLES + 1, 3), np.int32)
    many[:, 1], many[:, 2] = 1, 2
    cases = {
        "index out of range": (p, np.vstack([t, [[0, 1, len(p)]]]).astype(np.int32), c),
        "non-finite": (nan, t, c),
        "empty": (p, np.zeros((0, 3), np.int32), c),
        "too many triangles": (p, many, c),
        "no extent": (np.zeros_like(p), t, c),
        "colours short": (p, t, c[:-1]),
        "wrong dtype": (p, t, c),  # declared int32 below
    }
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(server.endpoint)
    try:
        for name, (positions, triangles, colors) in cases.items():
            if name == "wrong dtype":
                frames = _submit_frames(spec, positions, triangles, colors)
                header = json.loads(frames[1])
                header["buffers"][0]["dtype"] = "int32"
                frames[1] = json.dumps(header).encode()
            else:
                frames = _submit_frames(spec, positions, triangles, colors)
            socket.send_multipart(frames)
            assert socket.poll(30_000), name
            reply = decode(socket.recv_multipart())
            # Named as the field (init_mesh) or as its wire buffer (init_positions, ...): PROTOCOL.md lists both.
            assert reply.TYPE == "error" and ("init_mesh" in reply.reason or "'init_" in reply.reason), (name, reply)
        # A start mesh beside a blob spec, or beside init_from, is refused too.
        for changes in ({"init": "blob"}, {"init_from": "/tmp/x.glb"}):
            socket.send_multipart(_submit_frames({**spec, **changes}, p, t, c))
            assert socket.poll(30_000)
            reply = decode(socket.recv_multipart())
            assert reply.TYPE == "error" and "init_mesh" in reply.reason, (changes, reply)
    finally:
        socket.close(0)
    with BackendClient(server.endpoint) as client:
        assert isinstance(client.ping(), Welcome)  # still serving


def test_a_client_cannot_build_a_malformed_start(tmp_path):
    with pytest.raises(BadBuffer, match="init_mesh is empty"):
        Submit(spec=toy_spec(prompt="a red cube", init="mesh"), init_mesh=MeshData.empty())
    with pytest.raises(BadBuffer, match="spec.init = 'mesh'"):
        Submit(spec=toy_spec(prompt="a red cube"), init_mesh=cube())
