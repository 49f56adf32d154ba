"""Messages over real ZeroMQ sockets on 127.0.0.1: unchanged, zero-copy, never unpickled."""

from __future__ import annotations

import ast
import pickle
import _pickle
from pathlib import Path

import numpy as np
import pytest
import zmq

from blender_dreamfusion.shared import CLIENT_TYPES, SERVER_TYPES, BadTag, Image, JobSpec, Submit, decode, encode
from blender_dreamfusion.shared.transport import recv, recv_routed, send, send_routed
from tests.helpers.messages import make_mesh, make_update

SHARED = Path(__file__).resolve().parents[1] / "shared"
DEADLINE_MS = 10_000


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def wait_readable(sock) -> None:
    assert sock.poll(DEADLINE_MS, zmq.POLLIN), "nothing arrived before the deadline"


def pair(context, kind_a, kind_b):
    a = context.socket(kind_a)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b = context.socket(kind_b)
    b.connect(f"tcp://127.0.0.1:{port}")
    return a, b


def test_100k_vertex_update_over_pair_sockets_unchanged_and_zero_copy(context):
    a, b = pair(context, zmq.PAIR, zmq.PAIR)
    update = make_update(100_000, preview=Image(np.full((64, 48, 3), 200, np.uint8)))
    send(a, update)
    wait_readable(b)
    frames = b.recv_multipart(copy=False)
    received = decode(frames, accept=SERVER_TYPES)
    assert received == update
    assert received.mesh.vertex_count == 100_000 and received.mesh.triangle_count == 200_000
    # The arrays are views of ZeroMQ's own frame memory, not copies.
    views = [np.frombuffer(f.buffer, np.uint8) for f in frames[2:]]
    assert any(np.shares_memory(received.mesh.positions, v) for v in views)
    assert any(np.shares_memory(received.mesh.triangles, v) for v in views)


def test_dealer_router_round_trip_with_routing_envelope(context):
    router, dealer = pair(context, zmq.ROUTER, zmq.DEALER)
    submit = Submit(spec=JobSpec(prompt="a blue torus", seed=5, init="mesh"), request_id="req-1",
                    init_mesh=make_mesh(500))
    send(dealer, submit)
    wait_readable(router)
    peer, got = recv_routed(router, accept=CLIENT_TYPES)
    assert got == submit
    update = make_update(100_000, request_id="req-1")
    send_routed(router, peer, update)
    wait_readable(dealer)
    back = recv(dealer, accept=SERVER_TYPES)
    assert back == update


def test_bad_message_on_router_reports_the_peer(context):
    router, dealer = pair(context, zmq.ROUTER, zmq.DEALER)
    dealer.send_multipart([b"dreamfusion/9", b"{}"])
    wait_readable(router)
    with pytest.raises(BadTag) as info:
        recv_routed(router, accept=CLIENT_TYPES)
    assert isinstance(info.value.peer, bytes) and info.value.peer


class _Tripwire:
    fired = False

    def __reduce__(self):
        return (_fire, ())


def _fire():
    _Tripwire.fired = True
    return "boom"


def test_decoding_never_unpickles(context, monkeypatch):
    payload = pickle.dumps({"evil": _Tripwire()}, protocol=2)
    payload += b"\x00" * (-len(payload) % 3)
    pixels = np.frombuffer(payload, np.uint8).reshape(1, -1, 3).copy()
    calls = []

    def trap(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called while decoding")
        return refuse

    for module in (pickle, _pickle):
        for name in ("loads", "load", "Unpickler"):
            monkeypatch.setattr(module, name, trap(f"{module.__name__}.{name}"))
    monkeypatch.setattr(np, "load", trap("numpy.load"))
    monkeypatch.setattr(zmq.Socket, "recv_pyobj", trap("recv_pyobj"))
    monkeypatch.setattr(zmq.Socket, "recv_serialized", trap("recv_serialized"))

    a, b = pair(context, zmq.PAIR, zmq.PAIR)
    send(a, make_update(10, preview=Image(pixels)))
    wait_readable(b)
    got = recv(b, accept=SERVER_TYPES)
    assert got.preview.pixels.tobytes() == pixels.tobytes()  # pickle bytes arrive as inert bytes
    assert calls == [] and not _Tripwire.fired


FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
FORBIDDEN_CALLS = {"recv_pyobj", "send_pyobj", "recv_serialized", "send_serialized", "load", "loads"}


def test_the_protocol_package_has_no_way_to_unpickle():
    for path in SHARED.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & FORBIDDEN_MODULES, path
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in FORBIDDEN_MODULES, path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                is_json = isinstance(owner, ast.Name) and owner.id == "json"
                assert is_json or node.func.attr not in FORBIDDEN_CALLS, f"{path}:{node.lineno}"
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                raise AssertionError(f"{path}:{node.value.lineno} mentions allow_pickle")


def test_encode_sends_buffers_without_copying_them():
    update = make_update(1000)
    frames = encode(update)
    for array in (update.mesh.positions, update.mesh.triangles, update.mesh.colors):
        assert any(np.shares_memory(np.frombuffer(f, np.uint8), array) for f in frames[2:])
