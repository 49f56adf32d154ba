"""Where a submit's input is checked (#32): ownership holds for paths inside the data folder as it does for job ids,
no refusal names the server's folders, start meshes that cannot start a job and face counts that leave no mesh are
refused at submit naming the field, and resuming from a damaged only checkpoint says so. Real servers on loopback
(the `serve` command where the point is a real server: CURVE ownership, a restart)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
import zmq

from blender_dreamfusion.backend.asset.cleanup import decimate
from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.shared import (Accepted, Failed, Finished, JobSpec, MeshData, Progress, Rejected,
                                        SpecError, Submit)
from blender_dreamfusion.shared.client import BackendClient, CurveKeys
from blender_dreamfusion.shared.errors import BadBuffer
from blender_dreamfusion.shared.framing import decode
from blender_dreamfusion.shared.jobspec import MIN_FACE_COUNT
from blender_dreamfusion.shared.mesh import MAX_INIT_COORDINATE
from blender_dreamfusion.shared.version import PROTOCOL_TAG
from tests.helpers.servers import ServeProcess, ThreadServer, ended, events_until, tiny_spec


# --- A: ownership holds for paths too ---------------------------------------------------------------------------

def _curve_keys(tmp_path: Path) -> tuple[Path, CurveKeys, CurveKeys]:
    keys = tmp_path / "keys"
    assert main(["keys", "generate", str(keys), "--client", "alice", "--client", "bob"]) == 0
    return keys, *(CurveKeys.from_files(keys / "server.key", keys / "clients" / f"{name}.key_secret")
                   for name in ("alice", "bob"))


def _finished_job(client: BackendClient, model: Path) -> tuple[str, Path]:
    """A finished job of `client`'s and its checkpoint's path (what `finished` tells its owner)."""
    job = client.request(client.submit(tiny_spec(model, steps=2, stream_every=0))).job_id
    finished = events_until(client, ended(job))[-1]
    assert isinstance(finished, Finished) and Path(finished.checkpoint).is_file(), finished
    return job, Path(finished.checkpoint)


def _refused(client: BackendClient, tiny_model: Path, **fields) -> Rejected:
    reply = client.request(client.submit(tiny_spec(tiny_model, steps=2, **fields)))
    assert isinstance(reply, Rejected), (fields, reply)
    return reply


def _checkpoint(path) -> dict:
    return {"init": "checkpoint", "init_from": str(path)}


def _mesh_file(path) -> dict:
    return {"init": "mesh", "init_from": str(path)}


def _assert_paths_hold(owner: BackendClient, other: BackendClient, model: Path, data: Path, tmp_path: Path) -> None:
    """`other` may not see `owner`'s jobs: a path into one of them is refused in the words of a missing file, the
    owner may use it, and no refusal names the server's folders."""
    job, checkpoint = _finished_job(owner, model)
    folder = data / "jobs" / job
    assert checkpoint.resolve().parent == folder.resolve()  # the data folder lies inside an allowed folder (/tmp)
    reasons = []

    missing = _refused(other, model, **_checkpoint(tmp_path / "no-such.safetensors"))
    assert (missing.field, missing.reason) == ("init_from", "init_from: no such checkpoint file")
    link = tmp_path / "link.safetensors"  # in an allowed folder, pointing into the owner's job
    link.symlink_to(checkpoint)
    for path in (checkpoint, folder / "checkpoint.safetensors", link, folder / "no-such.safetensors",
                 data / "jobs" / "ffffffffffff" / "checkpoint.safetensors", data / "elsewhere.safetensors"):
        got = _refused(other, model, **_checkpoint(path))
        assert (got.field, got.reason) == (missing.field, missing.reason), path  # the very same words
        reasons.append(got.reason)
    # By id the job is "no job" to the other client, in the words of an id that names none (as before).
    assert _refused(other, model, init="checkpoint", init_from=job).reason == \
        _refused(other, model, init="checkpoint", init_from="ffffffffffff").reason

    # Any file in the owner's job folder: a start mesh too.
    glb = folder / "cube.glb"
    trimesh.creation.box().export(glb)
    missing_mesh = _refused(other, model, **_mesh_file(tmp_path / "no-such.glb"))
    assert missing_mesh.reason == "init_from: no such mesh file"
    assert _refused(other, model, **_mesh_file(glb)).reason == missing_mesh.reason

    # The owner may start from its own job by path (and the child records its parent) or from its files.
    for fields in (_checkpoint(checkpoint), _mesh_file(glb)):
        accepted = owner.request(owner.submit(tiny_spec(model, steps=100_000, stream_every=0, **fields)))
        assert isinstance(accepted, Accepted), (fields, accepted)
        assert owner.request(owner.status(accepted.job_id)).jobs[0].parent == \
            (job if fields["init"] == "checkpoint" else None)
        owner.cancel(accepted.job_id)
        events_until(owner, ended(accepted.job_id))

    # No refusal names a folder of the server's: not for a path outside, nor for a file that is no checkpoint
    # (whose reader's error quotes its real path), nor for a folder that is no model.
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    reasons += [missing.reason, missing_mesh.reason,
                _refused(owner, model, **_checkpoint("/etc/passwd")).reason,
                _refused(owner, model, **_checkpoint(folder / "job.json")).reason,
                _refused(owner, model, **_checkpoint(junk)).reason,
                _refused(owner, model, **_mesh_file("/etc/passwd.glb")).reason,
                _refused(owner, Path("/etc/no-such-model")).reason]
    assert "cannot read checkpoint" in reasons[-3]  # says what is wrong with the file, not where it is
    for reason in reasons:
        for folder_name in {str(data), str(data.resolve()), str(tmp_path), str(tmp_path.resolve())}:
            assert folder_name not in reason, reason


def test_under_curve_a_path_into_another_keys_job_is_refused_like_a_missing_file(tmp_path, tiny_sd):
    keys, alice_keys, bob_keys = _curve_keys(tmp_path)
    data = tmp_path / "data"
    server = ServeProcess(data, "--curve-dir", str(keys))  # allows /tmp, so the data folder too: the worst case
    try:
        with BackendClient(server.endpoint, curve=alice_keys) as alice, \
                BackendClient(server.endpoint, curve=bob_keys) as bob:
            _assert_paths_hold(alice, bob, tiny_sd, data, tmp_path)
    finally:
        assert server.stop() == 0


def test_without_shared_jobs_a_path_into_another_clients_job_is_refused_like_a_missing_file(tmp_path, tiny_sd):
    data = tmp_path / "data"
    running = ThreadServer(data, shared_jobs=False)
    try:
        with BackendClient(running.endpoint) as alice, BackendClient(running.endpoint) as bob:
            _assert_paths_hold(alice, bob, tiny_sd, data, tmp_path)
    finally:
        running.stop()


# --- B: start meshes and face counts refused at the edge ---------------------------------------------------------

def _corners(positions, triangles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(positions, np.float32)
    return p, np.asarray(triangles, np.int32), np.full((len(p), 4), 200, np.uint8)


_TETRA = [[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]]
#: Start meshes no job can start from -> the words they are refused in (after the field's name).
BAD_MESHES = {
    "on one line": (_corners([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], _TETRA),
                    "has no area: every triangle's corners lie on one line or one point"),
    "collapsed triangles": (_corners([[0, 0, 0], [1, 1, 1], [0, 0, 1]], [[0, 0, 1], [1, 2, 2], [2, 2, 2]]),
                            "has no area"),
    "every vertex at one point": (_corners([[5, 5, 5]] * 4, _TETRA), "has no extent"),
    "float32's largest": (_corners([[-3.4e38, 0, 0], [3.4e38, 0, 0], [0, 3.4e38, 0], [0, 0, 3.4e38]], _TETRA),
                          f"has a coordinate of 3.4e+38; a start mesh's coordinates must lie within "
                          f"±{MAX_INIT_COORDINATE:g} metres"),
    "just past the bound": (_corners([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2e6]], _TETRA),
                            "has a coordinate of 2e+06"),
}
#: What MeshData itself refuses (so no start mesh can carry it); refused at submit naming the field too.
MALFORMED = {
    "NaN": (_corners([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, np.nan]], _TETRA), "NaN or infinity"),
    "infinity": (_corners([[0, 0, 0], [np.inf, 0, 0], [0, 1, 0], [0, 0, 1]], _TETRA), "NaN or infinity"),
    "index out of range": (_corners([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 4]]), "outside [0, 4)"),
}


def _submit_frames(spec: JobSpec | dict, positions, triangles, colors) -> list[bytes]:
    """A submit built by hand, so its start mesh can be what no client would send."""
    parts = [("init_positions", positions), ("init_triangles", triangles), ("init_colors", colors)]
    header = {"type": "submit", "spec": spec if isinstance(spec, dict) else spec.to_dict(), "request_id": "edge",
              "buffers": [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in parts]}
    return [PROTOCOL_TAG, json.dumps(header).encode(), *(a.tobytes() for _, a in parts)]


def test_start_meshes_that_cannot_start_a_job_are_refused_at_submit_naming_the_field(tmp_path, capsys):
    spec = JobSpec(prompt="a red cube", seed=1, init="mesh")
    running = ThreadServer(tmp_path / "data")
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(running.endpoint)
    try:
        for name, ((positions, triangles, colors), words) in {**BAD_MESHES, **MALFORMED}.items():
            socket.send_multipart(_submit_frames(spec, positions, triangles, colors))
            assert socket.poll(30_000), name
            reply = decode(socket.recv_multipart())
            assert reply.TYPE == "error" and "init_mesh" in reply.reason and words in reply.reason, (name, reply)
            if name in BAD_MESHES:  # a client cannot build it either: the same check, the same words
                with pytest.raises(BadBuffer) as refused:
                    Submit(spec=spec, init_mesh=MeshData(positions, triangles, colors))
                assert str(refused.value).startswith(f"init_mesh {words}"), (name, refused.value)
                assert reply.reason == f"submit: {refused.value}", name
                # ... and `generate --init mesh --init-from FILE` refuses it in those words, naming its field.
                obj = tmp_path / f"{name.replace(' ', '-')}.obj"
                obj.write_text("".join(f"v {x!r} {y!r} {z!r}\n" for x, y, z in positions.tolist())
                               + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in triangles.tolist()))
                assert main(["generate", "a red cube", "--steps", "2", "--quiet", "--init", "mesh",
                             "--init-from", str(obj), "--out", str(tmp_path / "out.glb")]) == 1
                said = capsys.readouterr().err.strip().removeprefix("dreamfusion-backend generate: ")
                assert said.replace("init_from", "FIELD", 1) == str(refused.value).replace("init_mesh", "FIELD", 1)
        # Still serving, and a mesh far from the origin but within the bound is taken.
        far = trimesh.creation.box([2.0] * 3)
        mesh = MeshData.coerce(np.asarray(far.vertices) + (MAX_INIT_COORDINATE / 2, 0, 0), far.faces)
        with BackendClient(running.endpoint) as client:
            reply = client.request(client.submit(spec, init_mesh=mesh))
            assert isinstance(reply, Accepted), reply
            client.cancel(reply.job_id)
            events_until(client, ended(reply.job_id))
    finally:
        socket.close(0)
        running.stop()


def test_face_count_below_a_closed_shape_is_refused_and_decimation_reaches_the_minimum(tmp_path):
    for value in (1, MIN_FACE_COUNT - 1):
        with pytest.raises(SpecError, match=f"face_count = {value} is too small; allowed: an integer from 0 to "
                                            f"2000000 faces: 0 \\(off\\) or at least {MIN_FACE_COUNT}"):
            JobSpec(prompt="x", seed=0, face_count=value)
    assert JobSpec(prompt="x", seed=0, face_count=0).face_count == 0  # off
    assert JobSpec(prompt="x", seed=0, face_count=MIN_FACE_COUNT).face_count == MIN_FACE_COUNT
    # A submit from a client that does not check is refused by the server, naming the field.
    running = ThreadServer(tmp_path / "data")
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(running.endpoint)
    try:
        spec = {**JobSpec(prompt="a red cube", seed=1).to_dict(), "face_count": 1}
        socket.send_multipart([PROTOCOL_TAG, json.dumps({"type": "submit", "spec": spec}).encode()])
        assert socket.poll(30_000)
        reply = decode(socket.recv_multipart())
        assert reply.TYPE == "rejected" and reply.field == "face_count" and "at least 4" in reply.reason, reply
    finally:
        socket.close(0)
        running.stop()
    # The minimum is what decimation reaches on a closed shape, and what it leaves is still closed.
    sphere = trimesh.creation.icosphere(4)
    positions, triangles = decimate(sphere.vertices, sphere.faces, MIN_FACE_COUNT)
    assert len(triangles) == MIN_FACE_COUNT and trimesh.Trimesh(positions, triangles).is_watertight


# --- C: a damaged only checkpoint ---------------------------------------------------------------------------------

def test_resuming_from_a_damaged_only_checkpoint_fails_saying_so(tmp_path, tiny_sd):
    data = tmp_path / "data"
    server = ServeProcess(data)
    try:
        with BackendClient(server.endpoint) as client:
            # No checkpoint interval within reach: the only checkpoint is the one written when the server stops.
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=100_000, stream_every=0))).job_id
            events_until(client, lambda e: isinstance(e, Progress) and e.phase == "training" and e.step >= 2)
    finally:
        assert server.stop() == 0
    folder = data / "jobs" / job
    current = folder / "checkpoint.safetensors"
    assert sorted(p.name for p in folder.glob("checkpoint*")) == [current.name]
    with open(current, "r+b") as f:  # half of it gone: what a full disk or a failing drive leaves
        f.truncate(current.stat().st_size // 2)
    server = ServeProcess(data)
    try:
        with BackendClient(server.endpoint) as client:
            before = client.request(client.status(job)).jobs[0]
            assert before.state == "interrupted" and before.step >= 2
            assert isinstance(client.request(client.resume(job)), Accepted)
            events = events_until(client, ended(job))
            failed = events[-1]
            assert isinstance(failed, Failed), events
            assert not [e for e in events if isinstance(e, Progress) and e.phase == "training"]  # no quiet restart
            assert failed.reason.startswith("cannot resume: its only checkpoint is damaged, so the progress it "
                                            "held is lost (checkpoint.safetensors (CheckpointError: "), failed.reason
            assert failed.reason.endswith("); submit the job again to start it from step 0")
            assert str(data) not in failed.reason and str(tmp_path) not in failed.reason
            after = client.request(client.status(job)).jobs[0]
            assert (after.state, after.reason) == ("failed", failed.reason)
    finally:
        assert server.stop() == 0
