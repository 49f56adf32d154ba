"""The service under abuse and failure: fuzzed messages, SIGKILL mid-job, CURVE keys, and the client CLI."""

from __future__ import annotations

import json
import subprocess

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.shared import (CLIENT_TYPES, Ack, Cancel, Finished, Hello, Progress, ProtocolError, Status,
                                        Submit, Update, decode, encode)
from blender_dreamfusion.shared.client import BackendClient, BackendTimeout, CurveKeys
from tests.helpers.strategies import mutated_frames
from tests.helpers.servers import SCRIPT, ServeProcess, ThreadServer, ended, events_until, tiny_spec

FUZZ_EXAMPLES = 1000


def _client_messages(model):
    return [[bytes(f) for f in encode(m)] for m in (
        Submit(spec=tiny_spec(model), request_id="f1"), Cancel(job_id="abc", request_id="f2"),
        Ack(job_id="abc", step=3), Hello(client="fuzz"), Status(request_id="f3"))]


def malformed(valid):
    # Values that break client messages most often: wrong types, and server-only message types.
    values = (st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=3)
              | st.sampled_from(["update", "finished"]))
    keys = ["type", "job_id", "step", "spec", "buffers", "request_id", "extra"]
    return mutated_frames(valid, keys, values).map(lambda frames: frames or [b""])  # a DEALER cannot send none


def _local_code(frames) -> str | None:
    try:
        decode(frames, accept=CLIENT_TYPES)
    except ProtocolError as exc:
        return exc.code
    return None


def test_fuzzed_messages_each_get_an_error_and_the_server_still_works(tmp_path, tiny_sd):
    running = ThreadServer(tmp_path / "data", heartbeat_interval=60.0)
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(running.endpoint)
    answered = []
    try:
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
        @given(malformed(_client_messages(tiny_sd)))
        def check(frames):
            code = _local_code(frames)
            if code is None:
                return  # the mutation happened to leave a valid message; nothing to refuse
            socket.send_multipart(frames)
            assert socket.poll(10_000), "no answer to a malformed message"
            reply = decode(socket.recv_multipart())
            assert reply.TYPE in ("error", "rejected"), reply
            if reply.TYPE == "error":
                assert reply.code == code and reply.reason
            else:
                assert code == "bad_spec" and reply.field
            answered.append(code)

        check()
        assert len(answered) >= 0.9 * FUZZ_EXAMPLES, len(answered)
        assert len(set(answered)) >= 8  # the fuzz reached many kinds of failure
        with BackendClient(running.endpoint) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=10))).job_id
            assert isinstance(events_until(client, ended(job))[-1], Finished)
    finally:
        socket.close(0)
        running.stop()


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_finishes_from_the_checkpoint(tmp_path, tiny_sd):
    data = tmp_path / "data"
    first = ServeProcess(data)
    try:
        with BackendClient(first.endpoint) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=60, stream_every=10))).job_id
            events_until(client, lambda e: isinstance(e, Update) and e.step >= 20, timeout=300)
            first.kill()  # SIGKILL: no chance to save anything more
    finally:
        if first.process.poll() is None:
            first.kill()
    second = ServeProcess(data)
    try:
        with BackendClient(second.endpoint) as client:
            info = client.request(client.status(job)).jobs[0]
            assert info.state == "interrupted" and info.step >= 20 and "resume" in info.reason
            assert client.request(client.resume(job)).TYPE == "accepted"
            events = events_until(client, ended(job), timeout=300)
        steps = [e.step for e in events if isinstance(e, Progress) and e.phase == "training"]
        assert steps[0] > 20 and isinstance(events[-1], Finished) and events[-1].step == 60  # continued, not restarted
        # The command-line client sees the same job and fetches its result.
        out = tmp_path / "resumed.glb"
        done = subprocess.run([str(SCRIPT), "client", "result", job, "--backend", second.endpoint, "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 0 and "result.glb" in done.stdout
        status = subprocess.run([str(SCRIPT), "client", "status", "--json", "--backend", second.endpoint],
                                capture_output=True, text=True, timeout=120)
        assert json.loads(status.stdout)[0]["state"] == "finished"
    finally:
        assert second.stop() == 0


@pytest.mark.slow
def test_client_cli_submit_wait_and_cancel(tmp_path, tiny_sd):
    server = ServeProcess(tmp_path / "data")
    try:
        out = tmp_path / "cube.glb"
        common = ["--backend", server.endpoint, "--model", str(tiny_sd), "--steps", "15", "--render-resolution",
                  "32", "--mesh-resolution", "32", "--stream-every", "5"]
        done = subprocess.run([str(SCRIPT), "client", "submit", "a red cube", "--wait", "--out", str(out), *common],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "accepted" in done.stdout and out.stat().st_size > 0
        started = subprocess.run([str(SCRIPT), "client", "submit", "a red cube", *common[:4], "--steps", "100000"],
                                 capture_output=True, text=True, timeout=120)
        job = started.stdout.split()[1]
        cancel = subprocess.run([str(SCRIPT), "client", "cancel", job, "--backend", server.endpoint],
                                capture_output=True, text=True, timeout=300)
        assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stderr
        refused = subprocess.run([str(SCRIPT), "client", "submit", "a red dragon", "--backend", server.endpoint],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "(prompt)" in refused.stderr and "outside the vocabulary" in refused.stderr
        # Each built-in prior is held to its own words: a mug is toy-objects', not toy-shapes'.
        for model, prompt, known in (("toy-objects", "a red dragon", "mug"), ("toy-shapes", "a red mug", "torus")):
            refused = subprocess.run([str(SCRIPT), "client", "submit", prompt, "--model", model, "--backend",
                                      server.endpoint], capture_output=True, text=True, timeout=120)
            assert refused.returncode == 1 and "(prompt)" in refused.stderr and known in refused.stderr, \
                refused.stderr
    finally:
        server.stop()
    gone = subprocess.run([str(SCRIPT), "client", "status", "--backend", server.endpoint, "--timeout", "1"],
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 1 and "no answer from the backend" in gone.stderr


def test_non_loopback_bind_without_keys_refuses_to_start(capsys):
    assert main(["serve", "--bind", "tcp://0.0.0.0:0"]) == 1
    err = capsys.readouterr().err
    assert "refusing to listen on tcp://0.0.0.0:0 without authentication" in err and "keys generate" in err


def test_curve_authorised_client_works_and_unknown_key_gets_nothing(tmp_path, tiny_sd):
    keys = tmp_path / "keys"
    assert main(["keys", "generate", str(keys), "--client", "artist"]) == 0
    assert oct((keys / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    assert main(["keys", "generate", str(keys)]) == 1  # never overwrites keys
    stranger_dir = tmp_path / "stranger"
    assert main(["keys", "generate", str(stranger_dir), "--client", "stranger"]) == 0
    running = ThreadServer(tmp_path / "data", curve_dir=keys)
    try:
        good = CurveKeys.from_files(keys / "server.key", keys / "clients" / "artist.key_secret")
        with BackendClient(running.endpoint, curve=good) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=10))).job_id
            assert isinstance(events_until(client, ended(job))[-1], Finished)
        bad = CurveKeys.from_files(keys / "server.key", stranger_dir / "clients" / "stranger.key_secret")
        with BackendClient(running.endpoint, curve=bad) as stranger:
            with pytest.raises(BackendTimeout):
                stranger.ping(timeout=2.0)
            assert stranger.poll(0.5) == []
        with BackendClient(running.endpoint) as plain:  # no keys at all
            with pytest.raises(BackendTimeout):
                plain.ping(timeout=2.0)
    finally:
        running.stop()


def test_keys_for_a_remote_bind(tmp_path):
    keys = tmp_path / "keys"
    assert main(["keys", "generate", str(keys)]) == 0
    from blender_dreamfusion.backend.server.security import check_bind, is_loopback

    assert check_bind("tcp://0.0.0.0:5555", keys) is not None
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://[::1]:5555")
    assert is_loopback("tcp://localhost:0") and not is_loopback("tcp://*:5555")
    assert not is_loopback("tcp://192.168.1.4:5555") and not is_loopback("tcp://eth0:5555")


def test_serve_stops_when_its_parent_process_exits(tmp_path):
    parent = subprocess.Popen(["sleep", "600"])
    server = ServeProcess(tmp_path, "--parent-pid", str(parent.pid))
    assert server.process.poll() is None
    parent.kill()
    parent.wait()
    # The watcher checks every 2 s; a graceful stop then marks running jobs interrupted and exits 0.
    assert server.process.wait(timeout=30) == 0
    assert "parent process" in server.process.stdout.read()
