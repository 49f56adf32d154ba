"""The pipe between a server and its job processes: what a job reports arrives as it was sent (arrays, bytes,
JSON values), nothing is unpickled, and whatever a broken job process writes is PipeClosed, never another error."""

from __future__ import annotations

import json
import socket
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_dreamfusion.backend.server.job_pipe import JobPipe, PipeClosed


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield JobPipe(ours), theirs
    ours.close()
    theirs.close()


def test_a_report_arrives_as_it_was_sent(pair):
    pipe, theirs = pair
    other = JobPipe(theirs)
    positions = np.arange(12, dtype=np.float32).reshape(4, 3)
    empty = np.zeros((0, 3), np.int32)
    other.send(("mesh", positions, empty, None))
    other.send(("update", {"step": 3, "loss": float("nan"), "files": {"glb": "result.glb"}}, True))
    other.send(("checkpoint", b"\x00" * 100_000))
    kind, got, got_empty, nothing = pipe.recv(timeout=5)
    assert kind == "mesh" and got.dtype == np.float32 and np.array_equal(got, positions) and nothing is None
    assert got_empty.shape == (0, 3) and got_empty.dtype == np.int32
    assert got.flags.writeable  # as a store expects
    kind, changes, persist = pipe.recv(timeout=5)
    assert changes["step"] == 3 and np.isnan(changes["loss"]) and changes["files"] == {"glb": "result.glb"}
    assert persist is True
    assert pipe.recv(timeout=5) == ("checkpoint", b"\x00" * 100_000)
    assert pipe.recv(timeout=0.05) is None  # nothing more: a timeout, not an error


@pytest.mark.parametrize("value", [object(), np.array(["text"]), np.array([{}], dtype=object), {1: "key"},
                                   {"$buffer": 0}])
def test_what_the_pipe_cannot_carry_is_refused_before_anything_is_sent(pair, value):
    pipe, theirs = pair
    with pytest.raises(TypeError):
        JobPipe(theirs).send(("report", value))
    assert pipe.recv(timeout=0.05) is None


def frame(header: bytes, *buffers: bytes) -> bytes:
    parts = [header, *buffers]
    return struct.pack(f"<I{len(parts)}Q", len(parts), *map(len, parts)) + b"".join(parts)


HOSTILE = [
    frame(b"not json"),
    frame(json.dumps({"kind": "a mapping, not a report"}).encode()),
    frame(json.dumps([]).encode()),
    frame(json.dumps([1, 2]).encode()),
    frame(json.dumps(["mesh", {"$buffer": 5}]).encode()),
    frame(json.dumps(["mesh", {"$buffer": 1, "dtype": "|O", "shape": [1]}]).encode(), b"\x00" * 8),
    frame(json.dumps(["mesh", {"$buffer": 1, "dtype": "<U4", "shape": [1]}]).encode(), b"\x00" * 16),
    frame(json.dumps(["mesh", {"$buffer": 1, "dtype": "<f4", "shape": [-1, 7]}]).encode(), b"\x00" * 8),
    frame(json.dumps(["mesh", {"$buffer": 1, "dtype": "nonsense", "shape": [1]}]).encode(), b"\x00" * 8),
    struct.pack("<I", 0),
    struct.pack("<I", 10**6),
    struct.pack("<IQ", 1, 2**62),
    struct.pack("<IQ", 1, 100) + b"short",  # then the writer ends
]


@pytest.mark.parametrize("data", HOSTILE)
def test_whatever_a_broken_job_process_writes_is_pipe_closed(pair, data):
    pipe, theirs = pair
    theirs.sendall(data)
    theirs.close()
    with pytest.raises(PipeClosed):
        pipe.recv(timeout=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_random_bytes_are_pipe_closed_or_a_report(data):
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data)
        theirs.close()
        try:
            report = JobPipe(ours).recv(timeout=5)
        except PipeClosed:
            return
        assert report is None or (isinstance(report, tuple) and isinstance(report[0], str))
    finally:
        ours.close()


def test_a_frame_the_other_end_never_takes_is_pipe_closed_not_a_hang(pair, monkeypatch):
    monkeypatch.setattr("blender_dreamfusion.backend.server.job_pipe.FRAME_TIMEOUT", 0.5)
    _, theirs = pair
    stuck = JobPipe(theirs)  # its other end (ours) never reads, as a process stuck before its first read
    with pytest.raises(PipeClosed):
        stuck.send(("run", b"\x00" * 64 * 2**20))


def test_only_the_connection_with_the_secret_becomes_a_job_processes_pipe():
    from blender_dreamfusion.backend.server.process_runner import _JobProcess

    process = object.__new__(_JobProcess)  # its accept step alone: no child is started
    with socket.create_server(("127.0.0.1", 0)) as listener:
        process._listener, process._secret = listener, "s" * 64
        port = listener.getsockname()[1]
        rogue = socket.create_connection(("127.0.0.1", port))  # a local user racing the job process
        rogue.sendall(b"g" * 64)
        honest = socket.create_connection(("127.0.0.1", port))
        honest.sendall(b"s" * 64)
        assert process._accept_one() is None  # the rogue came first: refused
        rogue.settimeout(5)
        assert rogue.recv(1) == b""  # closed on it
        accepted = process._accept_one()
        accepted.sendall(b"x")
        assert honest.recv(1) == b"x"
        accepted.close()
        honest.close()
        rogue.close()
