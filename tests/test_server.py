"""The job service over real ZeroMQ sockets on 127.0.0.1 with a tiny diffusers model: jobs, streams, flow control."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import zmq

from blender_dreamfusion.shared import (Accepted, Cancelled, Finished, Heartbeat, JobSpec, ListReply, Progress,
                                        Rejected, StatusReply, Submit, Update, Welcome)
from blender_dreamfusion.shared.client import BackendClient
from blender_dreamfusion.shared.framing import decode
from blender_dreamfusion.shared.transport import send
from tests.helpers.servers import ThreadServer, ended, events_until, tiny_spec


@pytest.fixture
def server(tmp_path):
    running = ThreadServer(tmp_path / "data")
    yield running
    running.stop()


def _well_formed(mesh) -> None:
    assert mesh.vertex_count > 0 and mesh.triangle_count > 0
    assert mesh.colors.shape == (mesh.vertex_count, 4) and np.isfinite(mesh.positions).all()
    assert mesh.triangles.max() < mesh.vertex_count


def test_submit_streams_updates_then_finishes_with_files(server, tiny_sd, tmp_path):
    with BackendClient(server.endpoint) as client:
        assert isinstance(client.ping(), Welcome)
        accepted = client.request(client.submit(tiny_spec(tiny_sd, seed=None)))
        assert isinstance(accepted, Accepted) and accepted.spec.seed is not None  # the seed is resolved
        events = events_until(client, ended(accepted.job_id))
    updates = [e for e in events if isinstance(e, Update)]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.step == 30
    assert len(updates) >= 2 and [u.step for u in updates] == sorted(u.step for u in updates)
    for mesh in [u.mesh for u in updates] + [finished.mesh]:
        _well_formed(mesh)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].step == 30 and progress[-1].it_per_s > 0
    assert progress[-1].eta == 0
    assert (tmp_path / "data" / "jobs" / accepted.job_id / "result.glb").is_file()
    assert finished.files["glb"].endswith("result.glb") and finished.checkpoint.endswith(".safetensors")


def test_a_finished_job_is_decimated_and_textured_and_its_result_survives_a_restart(tmp_path, tiny_sd):
    import json
    import struct

    spec = tiny_spec(tiny_sd, steps=10, mesh_resolution=48, face_count=400, smoothing=2, texture_size=512)
    server = ThreadServer(tmp_path / "data")
    try:
        with BackendClient(server.endpoint) as client:
            accepted = client.request(client.submit(spec))
            events = events_until(client, ended(accepted.job_id))
    finally:
        server.stop()
    finished = events[-1]
    assert isinstance(finished, Finished), events[-1]
    mesh, texture = finished.mesh, finished.texture
    assert abs(mesh.triangle_count - 400) <= 20 and texture is not None
    assert texture.image.shape == (512, 512, 3) and texture.uvs.shape == (3 * mesh.triangle_count, 2)
    assert "baking" in [e.phase for e in events if isinstance(e, Progress)]
    # Streamed meshes are the raw extraction: post-processing is for the final result alone.
    assert all(e.mesh.triangle_count > 400 for e in events if isinstance(e, Update))
    data = (tmp_path / "data" / "jobs" / accepted.job_id / "result.glb").read_bytes()
    gltf = json.loads(data[20:20 + struct.unpack_from("<I", data, 12)[0]])
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}

    again = ThreadServer(tmp_path / "data")  # a new server on the same folder: the result is read from disk
    try:
        with BackendClient(again.endpoint) as client:
            result = client.request(client.result(accepted.job_id), timeout=30)
    finally:
        again.stop()
    assert isinstance(result, Finished) and result.mesh == mesh and result.texture == texture


def test_progress_is_rate_limited(server, tiny_sd):
    with BackendClient(server.endpoint) as client:
        job = client.request(client.submit(tiny_spec(tiny_sd, steps=60, stream_every=0))).job_id
        events = events_until(client, ended(job))
    times = [e.elapsed for e in events if isinstance(e, Progress) and e.phase == "training"]
    gaps = np.diff(times[:-1])  # the last step always reports
    assert len(times) < 60 and (gaps >= 0.45).all(), times


def test_cancel_mid_job_then_the_worker_takes_the_next(server, tiny_sd):
    with BackendClient(server.endpoint) as client:
        long_job = client.request(client.submit(tiny_spec(tiny_sd, steps=5000))).job_id
        short_job = client.request(client.submit(tiny_spec(tiny_sd, steps=10))).job_id
        events_until(client, lambda e: isinstance(e, Update) and e.job_id == long_job)
        client.cancel(long_job)
        cancelled = events_until(client, ended(long_job))[-1]
        assert isinstance(cancelled, Cancelled) and 0 < cancelled.step < 5000
        finished = events_until(client, ended(short_job))[-1]
        assert isinstance(finished, Finished) and finished.step == 10
        status = client.request(client.status())
        states = {j.job_id: j.state for j in status.jobs}
        assert states == {long_job: "cancelled", short_job: "finished"}
        # The cancelled job kept its partial result: it can be resumed, not cancelled twice.
        again = client.request(client.cancel(long_job))
        assert isinstance(again, Rejected) and "cancelled" in again.reason and again.job_id == long_job


def test_cancelling_a_queued_job_answers_at_once(server, tiny_sd):
    with BackendClient(server.endpoint) as client:
        running = client.request(client.submit(tiny_spec(tiny_sd, steps=5000))).job_id
        queued = client.request(client.submit(tiny_spec(tiny_sd, steps=10))).job_id
        client.cancel(queued)
        assert isinstance(events_until(client, ended(queued), timeout=10)[-1], Cancelled)
        client.cancel(running)
        events_until(client, ended(running))


def test_two_clients_see_only_their_own_jobs_unless_they_watch(server, tiny_sd):
    with BackendClient(server.endpoint) as a, BackendClient(server.endpoint) as b:
        job_a = a.request(a.submit(tiny_spec(tiny_sd, steps=20, prompt="a red cube"))).job_id
        job_b = b.request(b.submit(tiny_spec(tiny_sd, steps=20, prompt="a blue cube"))).job_id
        seen_a = events_until(a, ended(job_a))
        seen_b = events_until(b, ended(job_b))
        assert {getattr(e, "job_id", job_a) for e in seen_a} == {job_a}
        assert {getattr(e, "job_id", job_b) for e in seen_b} == {job_b}
        # b follows a third job that a submits.
        job_c = a.request(a.submit(tiny_spec(tiny_sd, steps=20))).job_id
        reply = b.request(b.watch(job_c))
        assert isinstance(reply, StatusReply) and reply.jobs[0].job_id == job_c
        assert isinstance(events_until(b, ended(job_c))[-1], Finished)
        listed = a.request(a.list())
        assert isinstance(listed, ListReply) and {j.job_id for j in listed.jobs} == {job_a, job_b, job_c}


def test_a_client_that_vanishes_does_not_stop_its_job(server, tiny_sd):
    quitter = BackendClient(server.endpoint)
    job = quitter.request(quitter.submit(tiny_spec(tiny_sd, steps=40))).job_id
    quitter.socket.close(0)  # gone without a goodbye
    with BackendClient(server.endpoint) as watcher:
        watcher.request(watcher.watch(job))
        assert isinstance(events_until(watcher, ended(job))[-1], Finished)
        result = watcher.request(watcher.result(job), timeout=30)
        assert isinstance(result, Finished) and result.request_id is not None
        _well_formed(result.mesh)


def test_a_client_that_never_acks_costs_at_most_one_held_update(server, tiny_sd):
    context = zmq.Context.instance()
    silent = context.socket(zmq.DEALER)
    silent.setsockopt(zmq.ROUTING_ID, b"silent-client")
    silent.connect(server.endpoint)
    send(silent, Submit(spec=tiny_spec(tiny_sd, steps=80, stream_every=5), request_id="s1"))
    with BackendClient(server.endpoint) as watcher:
        deadline = time.monotonic() + 120
        job = None
        while job is None and time.monotonic() < deadline:
            jobs = watcher.request(watcher.list()).jobs
            job = jobs[0].job_id if jobs else None
        watcher.request(watcher.watch(job))
        steps_streamed = []
        while not steps_streamed or steps_streamed[-1] < 40:
            send(silent, Heartbeat())  # alive, just never reading or acking
            for event in watcher.poll(0.2):
                if isinstance(event, Update):
                    steps_streamed.append(event.step)
                    assert server.server.held_updates(b"silent-client") <= 1
        assert server.server.held_updates(b"silent-client") == 1  # the newest, waiting for credit
        # Now the silent client reads: the first update (sent on its initial credit) ...
        messages = []
        while not any(isinstance(m, Update) for m in messages):
            messages.append(decode(silent.recv_multipart(copy=False)))
        first = next(m for m in messages if isinstance(m, Update))
        assert first.step == 5
        # ... and its ack releases the newest one the server held, not the ones in between.
        from blender_dreamfusion.shared import Ack

        send(silent, Ack(job_id=job, step=first.step))
        newest = steps_streamed[-1]
        while True:
            message = decode(silent.recv_multipart(copy=False))
            if isinstance(message, Update):
                break
        assert message.step >= newest >= 40
        events_until(watcher, ended(job))
    silent.close(0)


def test_bad_submissions_are_rejected_naming_the_field(server, tiny_sd, tmp_path):
    with BackendClient(server.endpoint) as client:
        for spec, field in [
            (JobSpec(prompt="a red dragon", model="toy-shapes"), "prompt"),
            (JobSpec(prompt="a red cube", model=str(tmp_path / "nowhere")), "model"),
            (JobSpec(prompt="a red cube", init="checkpoint", init_from="no-such-job"), "init_from"),
        ]:
            reply = client.request(client.submit(spec))
            assert isinstance(reply, Rejected) and reply.field == field, reply
        # A spec that fails validation on the wire is rejected too, with the field named.
        from blender_dreamfusion.shared.framing import encode

        frames = [bytes(f) for f in encode(Submit(spec=tiny_spec(tiny_sd), request_id="bad"))]
        frames[1] = frames[1].replace(b'"steps":30', b'"steps":0')
        client.socket.send_multipart(frames)
        reply = client.request("bad")
        assert isinstance(reply, Rejected) and reply.field == "steps" and "1 to 200000" in reply.reason


def test_a_model_that_cannot_load_fails_the_job_with_one_line(server, tmp_path):
    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    with BackendClient(server.endpoint) as client:
        job = client.request(client.submit(JobSpec(prompt="a red cube", model=str(empty_model)))).job_id
        failed = events_until(client, ended(job))[-1]
    assert failed.TYPE == "failed" and "model_index.json" in failed.reason and "\n" not in failed.reason


def test_unknown_jobs_and_wrong_states_are_refused(server, tiny_sd):
    with BackendClient(server.endpoint) as client:
        for request in (client.status("nope"), client.result("nope"), client.resume("nope"), client.watch("nope"),
                        client.cancel("nope")):
            reply = client.request(request)
            assert isinstance(reply, Rejected) and reply.field == "job_id" and "no job 'nope'" in reply.reason
        job = client.request(client.submit(tiny_spec(tiny_sd, steps=5000))).job_id
        reply = client.request(client.result(job))
        assert isinstance(reply, Rejected) and "once it has finished" in reply.reason
        reply = client.request(client.resume(job))
        assert isinstance(reply, Rejected) and "can be resumed" in reply.reason
        client.cancel(job)
        events_until(client, ended(job))


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_heartbeats_keep_an_idle_client_connected_and_a_lost_server_shows(tmp_path):
    running = ThreadServer(tmp_path / "data", heartbeat_interval=0.3)
    with BackendClient(running.endpoint) as client:
        client.ping()
        assert [e.TYPE for e in client.poll()] == ["welcome"]  # the answer to the hello sent on connecting
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # five intervals with nothing to say but heartbeats
            assert client.poll(0.1) == [] and client.server_alive
        assert running.server.subscribers.peer_count() == 1  # the server has not forgotten the client either
        running.stop()
        _wait_for(lambda: not client.server_alive, timeout=10)


def test_a_client_forgotten_for_silence_watches_its_jobs_again(tmp_path, tiny_sd):
    running = ThreadServer(tmp_path / "data", heartbeat_interval=0.3)
    try:
        with BackendClient(running.endpoint) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=60))).job_id
            # The client stops polling (Blender busy); the server drops it after three silent intervals.
            _wait_for(lambda: running.server.subscribers.peer_count() == 0)
            events = events_until(client, ended(job))
            assert any(isinstance(e, StatusReply) and e.jobs[0].job_id == job for e in events)  # it re-watched
            assert isinstance(events[-1], Finished)
    finally:
        running.stop()


def test_progress_names_the_phase_and_queued_jobs_hear_their_place_in_line(server, tiny_sd):
    with BackendClient(server.endpoint) as client:
        first = client.request(client.submit(tiny_spec(tiny_sd, steps=20))).job_id
        second = client.request(client.submit(tiny_spec(tiny_sd, steps=5))).job_id
        third = client.request(client.submit(tiny_spec(tiny_sd, steps=5))).job_id
        events = events_until(client, ended(third))
    def phases(job):
        return [(e.phase, e.queue_position) for e in events if isinstance(e, Progress) and e.job_id == job]

    # The running job: loading its model (said by its slot as it takes the job, then by its process), its steps,
    # then the final extraction, in that order.
    first_phases = [p for p, _ in phases(first) if p != "queued"]  # it may hear "next in line" first
    loading = len(first_phases) - len(list(itertools.dropwhile(lambda p: p == "loading_model", first_phases)))
    assert loading >= 1 and first_phases[-1] == "extracting", first_phases
    assert set(first_phases[loading:-1]) == {"training"}
    # One worker: the third waits behind two, then moves up when the first finishes, then runs.
    third_places = [pos for phase, pos in phases(third) if phase == "queued"]
    assert third_places[0] == 2 and third_places[-1] == 1, third_places
    assert [p for p, _ in phases(third) if p != "queued"][0] == "loading_model"
    second_places = [pos for phase, pos in phases(second) if phase == "queued"]
    assert second_places and set(second_places) == {1}, second_places
    # No place in line is announced once a job runs.
    for job in (first, second, third):
        seen = [p for p, _ in phases(job)]
        started = seen.index("loading_model")
        assert "queued" not in seen[started:], seen
