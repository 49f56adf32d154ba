"""The server against hostile and careless clients: messages that used to kill it, arbitrary JSON in every field,
clients that never read, thousands of jobs, other clients' jobs, paths outside the allowed folders, quotas."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.backend.server.admission import ServerLimits
from blender_dreamfusion.backend.server.jobs import JobStore
from blender_dreamfusion.shared import (CLIENT_TYPES, MESSAGE_TYPES, Ack, Bye, Deleted, Finished, Heartbeat, Hello,
                                        JobSpec, ListReply, MeshData, Progress, ProtocolError, Rejected, StatusReply,
                                        Submit, Update, decode, encode, jobspec_knobs)
from blender_dreamfusion.shared.client import BackendClient, CurveKeys
from blender_dreamfusion.shared.version import PROTOCOL_TAG
from blender_dreamfusion.backend.server.service import Server, ServerConfig
from tests.helpers.servers import (SCRIPT, TEMP_ROOT, ServeProcess, ThreadServer, ended, events_until, tiny_spec,
                                  two_clients_keys)

FUZZ_EXAMPLES = 600


def _raw_dealer(endpoint: str, routing_id: bytes | None = None, curve: CurveKeys | None = None) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        socket.setsockopt(zmq.ROUTING_ID, routing_id)
    if curve is not None:
        socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = (
            curve.server_public, curve.public, curve.secret)
    socket.connect(endpoint)
    return socket


def _header(obj) -> bytes:
    return json.dumps(obj).encode()  # ensure_ascii: a lone surrogate travels as the JSON escape \ud800


def _crashers() -> list[list[bytes]]:
    """One of each message that made `serve` exit before (issue 15), as a client would send them."""
    nested = b"[" * 1000 + b'"x"' + b"]" * 1000  # written out: json.dumps itself cannot nest that deep
    big = 9223372036854775808
    return [
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x", "preset": []}})],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x", "preset": {}}})],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x", "k" * 201: 1}})],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x", "\ud800": 1}})],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x"},
                                "buffers": [{"name": "init_positions", "dtype": "float32", "shape": "\ud800"}]}), b""],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x"},
                                "buffers": [{"name": "init_positions", "dtype": "float32", "shape": [0, big]}]}), b""],
        [PROTOCOL_TAG, _header({"type": "submit", "spec": {"prompt": "x"},
                                "buffers": [{"name": "init_positions", "dtype": "float32",
                                             "shape": [4611686018427387904, 0]}]}), b""],
        [PROTOCOL_TAG, b'{"type": "submit", "spec": {"prompt": ' + nested + b"}}"],
    ]


@pytest.mark.slow
def test_each_message_that_killed_serve_gets_a_reply_and_serve_then_completes_a_job(tmp_path, tiny_sd):
    server = ServeProcess(tmp_path / "data")
    socket = _raw_dealer(server.endpoint)
    try:
        for index, frames in enumerate(_crashers()):
            socket.send_multipart(frames)
            assert socket.poll(10_000), f"crasher {index}: no reply (server alive: {server.process.poll() is None})"
            reply = decode(socket.recv_multipart())
            assert reply.TYPE in ("error", "rejected") and reply.reason, (index, reply)
            reply.reason.encode("utf-8")  # valid text, whatever the input held
        assert server.process.poll() is None
        with BackendClient(server.endpoint) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=10))).job_id
            assert isinstance(events_until(client, ended(job))[-1], Finished)
    finally:
        socket.close(0)
        assert server.stop() == 0


# --- arbitrary JSON in every field, straight into decode-and-handle ------------------------------------------

def _nest(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = {"a": value} if depth % 2 else [value]
    return value


_text = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates and control characters too
_leaves = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | _text
           | st.sampled_from(["x" * 5000, "🧊" * 600, "a red cube", "update", "toy-shapes", "/etc/shadow", "../x"])
           | st.sampled_from([3, 31, 33, 1000]).map(_nest))
JSON = st.recursive(_leaves, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
                    max_leaves=12)
_SPEC_KEYS = [*jobspec_knobs(), "preset"]


@st.composite
def hostile_frames(draw) -> list[bytes]:
    """A header whose every field, the spec's fields and the buffer descriptors may hold any JSON value; mostly
    of a real client type with its fields present, so the fuzz gets past the first checks."""
    if draw(st.integers(0, 9)) < 8:
        message_type = draw(st.sampled_from(["submit", *sorted(CLIENT_TYPES)]))  # submit first: shrinks to it
    else:
        message_type = draw(st.sampled_from(["update", "nonsense"]) | JSON)
    header: dict = {"type": message_type}
    cls = MESSAGE_TYPES.get(message_type) if isinstance(message_type, str) else None
    names = [f.name for f in dataclasses.fields(cls)] if cls is not None else ["request_id"]
    names += ["buffers", "extra"]
    for name in names:
        if draw(st.integers(0, 9)) < (3 if name not in ("buffers", "extra", "init_mesh") else 9):
            continue  # fields are there 7 times in 10; buffers, buffer fields and unknown fields once in 10
        if name == "spec":
            keys = draw(st.lists(st.sampled_from(_SPEC_KEYS) | _text, max_size=5, unique=True))
            spec = {k: draw(JSON) for k in keys}
            if draw(st.booleans()):
                spec["prompt"] = draw(st.sampled_from(["a red cube", "a blue sphere"]) | JSON)
            header["spec"] = spec
        elif name == "buffers":
            header["buffers"] = draw(JSON | st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["init_positions", "init_triangles", "init_colors"]) | _text,
                 "dtype": st.sampled_from(["float32", "int32", "uint8"]) | JSON, "shape": JSON}), max_size=3))
        elif name == "job_id" and draw(st.booleans()):
            header[name] = draw(st.sampled_from(["abc", "job00001", "x" * 64]))
        elif name == "request_id" and draw(st.booleans()):
            header[name] = draw(st.sampled_from(["r1", "a" * 64]))
        else:
            header[name] = draw(JSON)
    if draw(st.integers(0, 4)) == 0:
        head = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")  # maybe invalid UTF-8
    else:
        head = json.dumps(header).encode()
    extra = draw(st.lists(st.binary(max_size=24), max_size=3)) if draw(st.integers(0, 3)) == 0 else []
    return [PROTOCOL_TAG, head, *extra]


def _expects_reply(frames: list[bytes]) -> bool:
    try:
        message = decode(frames, accept=CLIENT_TYPES)
    except ProtocolError:
        return True
    except Exception as exc:  # the decoder itself must never raise anything else
        raise AssertionError(f"decode raised {exc!r}") from None
    return not isinstance(message, (Heartbeat, Ack, Bye))  # fire and forget by design


def test_arbitrary_json_in_every_field_never_escapes_the_handler_and_always_gets_a_reply(tmp_path):
    """Drives `handle_frames` (the loop's per-message entry) directly, with a real socket for the replies; no loop
    thread, so nothing it queues runs."""
    server = Server(ServerConfig(bind="tcp://127.0.0.1:0", data_dir=tmp_path / "data", device="cpu",
                                 allow_paths=(TEMP_ROOT,), limits=ServerLimits(max_queued_per_client=1)))
    client = _raw_dealer(server.endpoint, routing_id=b"fuzzer")
    peer = [b"fuzzer"]
    try:
        client.send_multipart([PROTOCOL_TAG, b'{"type":"hello"}'])
        assert server.socket.poll(10_000)
        server.handle_frames(server.socket.recv_multipart(copy=False))
        assert decode(client.recv_multipart()).TYPE == "welcome"
        answered = []

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(hostile_frames())
        def check(frames):
            expect = _expects_reply(frames)
            server.handle_frames(peer + frames)  # raises = the test fails: nothing may escape
            if expect:
                assert client.poll(5_000), f"no reply to {frames[1][:200]!r}"
                while client.poll(0):
                    reply = decode(client.recv_multipart())
                    reply.reason.encode("utf-8") if hasattr(reply, "reason") else None
                    answered.append(reply.TYPE)

        check()
        assert {"error", "rejected"} <= set(answered)
        server.handle_frames(peer + [PROTOCOL_TAG, b'{"type":"hello","request_id":"after"}'])
        assert decode(client.recv_multipart()).request_id == "after"  # still answering
    finally:
        client.close(0)
        server._shutdown()


# --- memory: a client that never reads -----------------------------------------------------------------------

def _memory(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def _finished_job(data: Path, vertices: int = 60_000, prompt: str = "a red cube", owner: str = "") -> str:
    """A finished job written straight into a data folder, with a mesh of `vertices` vertices."""
    store = JobStore(data)
    record = store.create(JobSpec(prompt=prompt, steps=10, seed=1), owner=owner)
    rng = np.random.default_rng(0)
    mesh = MeshData(rng.random((vertices, 3), dtype=np.float32),
                    rng.integers(0, vertices, (2 * vertices, 3), dtype=np.int32),
                    np.full((vertices, 4), 200, np.uint8))
    store.save_mesh(record.job_id, mesh)
    store.update(record.job_id, state="finished", step=10)
    return record.job_id


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
def test_300_result_requests_from_a_client_that_never_reads_cost_less_than_two_meshes(tmp_path):
    data = tmp_path / "data"
    vertices = 150_000
    job = _finished_job(data, vertices)
    mesh_bytes = vertices * (12 + 4) + 2 * vertices * 12  # 6.0 MB on the wire
    server = ServeProcess(data)
    silent = None
    try:
        with BackendClient(server.endpoint) as reader:  # one full round trip first: code paths, buffers, caches
            assert isinstance(reader.request(reader.result(job), timeout=30), Finished)
        pid = server.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS
        before = _memory(pid, "VmRSS")
        silent = _raw_dealer(server.endpoint, routing_id=b"never-reads")
        for i in range(300):
            silent.send_multipart([PROTOCOL_TAG, _header({"type": "result", "job_id": job, "request_id": f"r{i}"})])
        # Only now does it read: one mesh and 298 'superseded' notes; its ack releases the last request's mesh.
        # Reading them all proves the server handled all 300; its peak RSS says what it held meanwhile.
        replies = []
        while len(replies) < 299:
            assert silent.poll(30_000), f"only {len(replies)} replies"
            replies.append(decode(silent.recv_multipart()))
        grown = _memory(pid, "VmHWM") - before
        assert grown < 2 * mesh_bytes, f"peak RSS grew {grown / 2**20:.1f} MiB; a mesh is {mesh_bytes / 2**20:.1f} MiB"
        meshes = [r for r in replies if isinstance(r, Finished)]
        assert [m.request_id for m in meshes] == ["r0"]
        assert all(isinstance(r, Rejected) and "superseded" in r.reason for r in replies if r is not meshes[0])
        silent.send_multipart(encode(Ack(job_id=job, step=10)))
        assert silent.poll(30_000)
        last = decode(silent.recv_multipart())
        assert isinstance(last, Finished) and last.request_id == "r299" and last.mesh.vertex_count == vertices
    finally:
        if silent is not None:
            silent.close(0)
        server.stop()


# --- paged lists ---------------------------------------------------------------------------------------------

def test_2000_jobs_with_500_character_prompts_still_list_in_pages(tmp_path):
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    prompt = "🧊" * 500  # 2,000 bytes of UTF-8 each: one reply with all of them would be 4 MB
    spec = JobSpec(prompt=prompt, steps=10, seed=1).to_dict()
    for i in range(2000):
        job_id = f"job{i:05d}"
        (data / "jobs" / job_id).mkdir()
        record = {"job_id": job_id, "spec": spec, "state": "finished", "step": 10, "created": 1000.0 + i,
                  "reason": "r" * 2000}
        (data / "jobs" / job_id / "job.json").write_text(json.dumps(record), encoding="utf-8")
    running = ThreadServer(data)
    try:
        with BackendClient(running.endpoint) as client:
            first = client.request(client.list())
            assert isinstance(first, ListReply) and first.total == 2000 and first.next_offset == len(first.jobs)
            assert 0 < len(first.jobs) <= 200 and len(first.jobs[0].prompt) <= 200
            page = client.request(client.status(offset=1950))
            assert isinstance(page, StatusReply) and [j.job_id for j in page.jobs][0] == "job01950"
            assert page.next_offset is None and len(page.jobs) == 50
            every = client.list_all()
            assert [j.job_id for j in every] == [f"job{i:05d}" for i in range(2000)]
            one = client.request(client.status("job00007"))
            assert one.jobs[0].prompt == prompt  # a single job's status keeps the prompt whole
        listed = subprocess.run([str(SCRIPT), "client", "status", "--json", "--backend", running.endpoint],
                                capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 2000  # the CLI follows the pages
    finally:
        running.stop()


# --- sessions and owners ---------------------------------------------------------------------------------------

def _events_of(socket: zmq.Socket, job: str) -> list:
    seen = []
    while socket.poll(0):
        message = decode(socket.recv_multipart())
        if getattr(message, "job_id", None) == job:
            seen.append(message)
    return seen


def test_a_second_dealer_with_a_victims_routing_id_receives_none_of_its_events(tmp_path, tiny_sd):
    running = ThreadServer(tmp_path / "data")
    victim = _raw_dealer(running.endpoint, routing_id=b"victim")
    thief = thief_later = None
    try:
        victim.send_multipart(encode(Submit(spec=tiny_spec(tiny_sd, steps=100_000, stream_every=3), request_id="s")))
        assert victim.poll(30_000)
        job = decode(victim.recv_multipart()).job_id
        # While the victim is connected, ZeroMQ refuses a second connection with its id (no handover).
        thief = _raw_dealer(running.endpoint, routing_id=b"victim")
        thief.send_multipart(encode(Hello(client="thief", request_id="t")))
        victim_saw = 0
        deadline = time.monotonic() + 120
        beat = 0.0
        while victim_saw < 6 and time.monotonic() < deadline:  # the job goes on streaming to its owner ...
            if time.monotonic() - beat > 0.5:  # a live client is heard from (the server forgets silent ones)
                victim.send_multipart(encode(Heartbeat(time=time.time())))
                beat = time.monotonic()
            if victim.poll(200):
                message = decode(victim.recv_multipart())
                victim_saw += isinstance(message, (Progress, Update))
                if isinstance(message, Update):
                    victim.send_multipart(encode(Ack(job_id=job, step=message.step)))
        assert victim_saw >= 6
        assert not thief.poll(0), "the thief got something while the victim was connected"  # ... and only to it
        # The victim goes away; a new connection with its id starts an empty session.
        victim.close(0)
        thief.close(0)
        thief_later = _raw_dealer(running.endpoint, routing_id=b"victim")
        thief_later.send_multipart(encode(Hello(client="thief", request_id="t2")))
        with BackendClient(running.endpoint) as watcher:
            watcher.request(watcher.watch(job))
            events_until(watcher, lambda e: isinstance(e, Progress), timeout=60)
            steps = [e.step for e in events_until(watcher, lambda e: isinstance(e, Update), timeout=60)
                     if isinstance(e, (Progress, Update))]
            assert steps  # the job still runs and streams ...
            got = _events_of(thief_later, job)
            assert got == [], f"the thief got {[m.TYPE for m in got]}"  # ... to the watcher, not to the thief
            watcher.cancel(job)
            events_until(watcher, ended(job))
    finally:
        for socket in (victim, thief, thief_later):
            if socket is not None:
                socket.close(0)
        running.stop()


def test_under_curve_jobs_belong_to_the_key_that_submitted_them(tmp_path, tiny_sd):
    keys = tmp_path / "keys"
    alice_keys, bob_keys = two_clients_keys(keys)
    running = ThreadServer(tmp_path / "data", curve_dir=keys)
    try:
        with BackendClient(running.endpoint, curve=alice_keys) as alice, \
                BackendClient(running.endpoint, curve=bob_keys) as bob:
            job = alice.request(alice.submit(tiny_spec(tiny_sd, steps=100_000, stream_every=50))).job_id
            refused = bob.request(bob.cancel(job))
            assert isinstance(refused, Rejected) and "no job" in refused.reason  # not even told it exists
            assert bob.request(bob.list()).jobs == []
            assert isinstance(bob.request(bob.watch(job)), Rejected)
            assert isinstance(bob.request(bob.delete(job)), Rejected)
            assert [j.job_id for j in alice.request(alice.list()).jobs] == [job]
            assert alice.request(alice.status(job)).jobs[0].state in ("queued", "running")
            alice.cancel(job)
            assert events_until(alice, ended(job))[-1].TYPE == "cancelled"
    finally:
        running.stop()
    # With --shared-jobs, another key may watch and list, never stop or delete.
    running = ThreadServer(tmp_path / "data", curve_dir=keys, shared_jobs=True)
    try:
        with BackendClient(running.endpoint, curve=bob_keys) as bob:
            assert [j.job_id for j in bob.request(bob.list()).jobs] == [job]
            refused = bob.request(bob.resume(job))
            assert isinstance(refused, Rejected) and "belongs to another client" in refused.reason
    finally:
        running.stop()


# --- paths -----------------------------------------------------------------------------------------------------

def test_files_outside_the_allowed_folders_are_refused_in_the_same_words_whether_or_not_they_exist(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"x" * 100)
    (allowed / "escape").symlink_to(tmp_path / "secret.safetensors")
    running = ThreadServer(tmp_path / "data", allow_paths=(allowed,))

    def reason(client, **fields) -> str:
        reply = client.request(client.submit(JobSpec(prompt="a red cube", seed=1, **fields)))
        assert isinstance(reply, Rejected), reply
        return reply.reason

    try:
        with BackendClient(running.endpoint) as client:
            for field, kind in (("init_from", "checkpoint"), ("model", None)):
                fields = (lambda p: {"init": "checkpoint", "init_from": p}) if kind else (lambda p: {"model": p})
                existing = reason(client, **fields(str(tmp_path / "secret.safetensors")))
                missing = reason(client, **fields(str(tmp_path / "no-such-file")))
                assert existing.replace("secret.safetensors", "X") == missing.replace("no-such-file", "X")
                assert str(allowed) not in existing and str(tmp_path) not in existing  # no folder is named
                via_link = reason(client, **fields(str(allowed / "escape")))  # a symlink out is outside too
                assert via_link.replace(str(allowed / "escape"), "X") == missing.replace(
                    str(tmp_path / "no-such-file"), "X")
            relative = reason(client, init="checkpoint", init_from="./checkpoint.safetensors")
            assert "neither a job on this backend nor a path inside" in relative
            inside = reason(client, init="checkpoint", init_from=str(allowed / "missing.safetensors"))
            assert "no such checkpoint file" in inside  # inside an allowed folder, existence may be told
    finally:
        running.stop()


# --- quotas, delete, retention ----------------------------------------------------------------------------------

def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_quotas_refuse_with_the_reason_and_delete_frees_the_disk(tmp_path, tiny_sd):
    data = tmp_path / "data"
    running = ThreadServer(data, limits=ServerLimits(max_jobs=2, max_queued_per_client=1, keep_checkpoints=0))
    try:
        with BackendClient(running.endpoint) as a, BackendClient(running.endpoint) as b:
            first = a.request(a.submit(tiny_spec(tiny_sd, steps=12, stream_every=4))).job_id
            busy = a.request(a.submit(tiny_spec(tiny_sd, steps=12)))
            assert isinstance(busy, Rejected) and "--max-queued-per-client 1" in busy.reason
            events_until(a, ended(first))
            second = b.request(b.submit(tiny_spec(tiny_sd, steps=12, stream_every=4))).job_id
            events_until(b, ended(second))
            full = b.request(b.submit(tiny_spec(tiny_sd, steps=12)))
            assert isinstance(full, Rejected) and "--max-jobs 2" in full.reason and full.field is None
            # Retention 0: finished jobs keep their mesh (result works), not their checkpoint.
            assert not list((data / "jobs" / first).glob("checkpoint*"))
            assert isinstance(a.request(a.result(first), timeout=30), Finished)
            size = _folder_size(data / "jobs" / first)
            deleted = a.request(a.delete(first))
            assert isinstance(deleted, Deleted) and deleted.freed_bytes == size > 0
            assert not (data / "jobs" / first).exists()
            assert isinstance(a.request(a.status(first)), Rejected)
            third = a.request(a.submit(tiny_spec(tiny_sd, steps=100_000, stream_every=4))).job_id  # room again
            events_until(a, lambda e: isinstance(e, Update) and e.job_id == third)
            gone = a.request(a.delete(third), timeout=60)  # a running job: cancelled, then deleted
            assert isinstance(gone, Deleted) and not (data / "jobs" / third).exists()
    finally:
        running.stop()
    tight = ThreadServer(tmp_path / "data", limits=ServerLimits(max_disk=1024))
    try:
        with BackendClient(tight.endpoint) as client:
            over = client.request(client.submit(tiny_spec(tiny_sd, steps=12)))
            assert isinstance(over, Rejected) and "--max-disk" in over.reason
    finally:
        tight.stop()


def test_a_job_cancelled_before_it_started_keeps_nothing(tmp_path, tiny_sd):
    data = tmp_path / "data"
    running = ThreadServer(data)
    try:
        with BackendClient(running.endpoint) as client:
            jobs = []
            for _ in range(6):
                job = client.request(client.submit(tiny_spec(tiny_sd, steps=100_000, stream_every=1))).job_id
                client.cancel(job)  # at once: queued, or claimed by the worker and still loading
                jobs.append(job)
            remaining = set(jobs)
            events_until(client, lambda e: e.TYPE == "cancelled" and not remaining.discard(e.job_id)
                         and not remaining)
        # A job the worker had begun stepping keeps what it learnt; one that never stepped keeps only its record.
        never_started = [job for job in jobs if running.server.store.get(job).step == 0]
        assert len(never_started) >= 5  # one worker: all but the first were still queued
        for job in never_started:
            assert [p.name for p in (data / "jobs" / job).iterdir()] == ["job.json"]
    finally:
        running.stop()


def test_an_abstract_ipc_endpoint_needs_keys(capsys):
    assert main(["serve", "--bind", "ipc://@dreamfusion-test"]) == 1
    assert "abstract ipc socket" in capsys.readouterr().err


def test_serve_limit_flags_are_checked(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--max-disk", "lots"])
    assert "--max-disk: 'lots' is not a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--allow-path", "/no/such/folder"])
    assert "--allow-path: /no/such/folder is not a folder" in capsys.readouterr().err


def test_the_add_ons_local_backend_is_started_with_the_folders_it_may_read(tmp_path):
    from blender_dreamfusion.addon_core.local_backend import LocalBackend, allowed_folders, split_folders

    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert split_folders(f" {models} ;; ~/x ") == [str(models), "~/x"]
    assert allowed_folders([str(models), "", str(tmp_path / "file.txt"), str(tmp_path / "none"), str(models)]) \
        == [str(models)]  # existing folders only, once each
    backend = LocalBackend(["dreamfusion-backend"], allow_paths=[str(models), str(tmp_path / "missing")])
    assert backend.command[-2:] == ["--allow-path", str(models)] and backend.command.count("--allow-path") == 1
