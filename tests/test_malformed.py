"""Each kind of malformed message raises its own ProtocolError subclass with a precise message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from blender_dreamfusion.shared import (CLIENT_TYPES, BadBuffer, BadDtype, BadField, BadJobSpec, BadJSON, BadTag, Error,
                                        FrameCountMismatch, IndexOutOfRange, LengthMismatch, MissingField, MissingType,
                                        NonFinite, OverSize, ProtocolError, UnexpectedType, UnknownField, UnknownType,
                                        decode, encode)
from blender_dreamfusion.shared.errors import SpecError
from blender_dreamfusion.shared.jobspec import JobSpec
from blender_dreamfusion.shared.knobs import Knob
from blender_dreamfusion.shared.messages import MAX_STEP
from blender_dreamfusion.shared.version import PROTOCOL_TAG
from tests.helpers.messages import make_update
from tests.helpers.strategies import mutated_frames

GOOD_SPEC = {"prompt": "a red cube"}


def frames(header: dict, *buffers: bytes, tag: bytes = PROTOCOL_TAG) -> list[bytes]:
    return [tag, json.dumps(header).encode(), *buffers]


def mesh_header(n: int = 3, m: int = 1, **changes) -> dict:
    header = {"type": "update", "job_id": "j", "step": 1, "steps": 2, "elapsed": 0.0,
              "buffers": [{"name": "positions", "dtype": "float32", "shape": [n, 3]},
                          {"name": "triangles", "dtype": "int32", "shape": [m, 3]},
                          {"name": "colors", "dtype": "uint8", "shape": [n, 4]}]}
    header.update(changes)
    return header


def mesh_buffers(positions=None, triangles=None, n: int = 3) -> list[bytes]:
    positions = np.zeros((n, 3), "<f4") if positions is None else positions
    triangles = np.array([[0, 1, 2]], "<i4") if triangles is None else triangles
    return [positions.tobytes(), triangles.tobytes(), np.zeros((n, 4), "u1").tobytes()]


def raises(cls, frames_, match: str, **kwargs):
    with pytest.raises(cls, match=match) as info:
        decode(frames_, **kwargs)
    assert type(info.value) is cls, f"expected exactly {cls.__name__}, got {type(info.value).__name__}"
    return info.value


def test_a_valid_message_decodes():
    message = decode(frames(mesh_header(), *mesh_buffers()))
    assert message.mesh.vertex_count == 3


def test_wrong_tag():
    raises(BadTag, frames({"type": "hello"}, tag=b"dreamfusion/2"), "frame 0 must be 'dreamfusion/1'.*dreamfusion/2")
    raises(BadTag, frames({"type": "hello"}, tag=b"HTTP/1.1"), "HTTP/1.1")


def test_too_few_frames():
    raises(FrameCountMismatch, [PROTOCOL_TAG], "at least 2 frames")
    raises(FrameCountMismatch, [], "got 0")


def test_buffer_frames_must_match_the_declared_buffers():
    raises(FrameCountMismatch, frames(mesh_header(), *mesh_buffers()[:2]), "declares 3 buffers but 2")
    raises(FrameCountMismatch, frames({"type": "hello"}, b"extra"), "declares 0 buffers but 1")


@pytest.mark.parametrize("header, match", [
    (b"\xff\xfe not utf8", "not UTF-8"),
    (b"{\"type\": \"hello\"", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object, got list"),
    (b"{\"type\": \"heartbeat\", \"time\": NaN}", "NaN is not JSON"),
    (b"{\"type\": \"heartbeat\", \"time\": Infinity}", "Infinity is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
])
def test_bad_json(header, match):
    raises(BadJSON, [PROTOCOL_TAG, header], match)


def test_missing_type():
    raises(MissingType, frames({"job_id": "x"}), "no 'type'")


@pytest.mark.parametrize("value", ["launch_missiles", 7, "", ["hello"]])
def test_unknown_type(value):
    raises(UnknownType, frames({"type": value}), "unknown message type")


def test_server_message_sent_to_server_is_unexpected():
    error = raises(UnexpectedType, encode(make_update(4)), "'update' is sent by the server", accept=CLIENT_TYPES)
    assert error.message_type == "update"


def test_missing_field():
    raises(MissingField, frames({"type": "cancel"}), "cancel: missing field 'job_id'")


def test_unknown_field():
    raises(UnknownField, frames({"type": "cancel", "job_id": "j", "force": True}), "unknown field 'force'")


@pytest.mark.parametrize("header, match", [
    ({"type": "cancel", "job_id": 5}, "job_id = 5 is not text; allowed: text matching"),
    ({"type": "cancel", "job_id": "has spaces"}, "job_id = 'has spaces' does not match; allowed: text matching"),
    ({"type": "ack", "job_id": "j", "step": -1}, r"step = -1 is out of range; allowed: an integer from 0 to 1000000000"),
    ({"type": "ack", "job_id": "j", "step": True}, "step = True is not an integer; allowed: an integer from 0"),
    ({"type": "status_reply", "jobs": [{"job_id": "j", "state": "exploded", "prompt": "p"}]},
     r"jobs\[0\].state = 'exploded' is not a known choice; allowed: one of 'queued'"),
    ({"type": "hello", "client": "x" * 201},
     r"client = .* is too long \(201 characters\); allowed: text of at most 200 characters"),
    ({"type": "cancel", "job_id": "j", "request_id": {"a": 1}}, "request_id = {'a': 1} is not text; allowed: text matching"),
])
def test_bad_field(header, match):
    raises(BadField, frames(header), match)


def test_a_message_field_is_checked_by_the_rule_a_knob_is_made_of():
    """One validator: a header field refuses in the very words of a JobSpec knob with the same range, and only
    what a knob adds (refusing control characters in a prompt) differs."""
    step = Knob(value_type="int", help="", minimum=0, maximum=MAX_STEP)
    with pytest.raises(SpecError) as knob_error:
        step.check("step", -1)
    wire_error = raises(BadField, frames({"type": "ack", "job_id": "j", "step": -1}), "step")
    assert str(wire_error) == f"ack: {knob_error.value}"
    prompt = JobSpec.__dataclass_fields__["prompt"].metadata["knob"]
    with pytest.raises(SpecError, match="contains control characters"):
        prompt.check("prompt", "a\x07cube")
    reason = decode(frames({"type": "failed", "job_id": "j", "reason": "Traceback\x1b[31m"}))
    assert reason.reason == "Traceback\x1b[31m"  # a reason may quote what a library printed


def test_bad_spec_names_the_field_and_range_and_keeps_the_request_id():
    error = raises(BadJobSpec, frames({"type": "submit", "request_id": "r7", "spec": {"prompt": "x", "steps": 0}}),
                   r"spec.steps = 0 is out of range; allowed: an integer from 1 to 200000")
    assert error.spec_error.field == "steps"
    assert error.request_id == "r7"
    reply = Error.from_exception(error)
    assert reply.request_id == "r7" and reply.code == "bad_spec"


@pytest.mark.parametrize("dtype", ["float64", "int64", "object", "<f4", 7])
def test_dtype_outside_the_allowed_three(dtype):
    header = mesh_header()
    header["buffers"][0]["dtype"] = dtype
    raises(BadDtype, frames(header, *mesh_buffers()), "allowed: uint8, int32, float32")


def test_allowed_dtype_in_the_wrong_buffer():
    header = mesh_header()
    header["buffers"][1]["dtype"] = "float32"
    raises(BadDtype, frames(header, *mesh_buffers()), "buffer 'triangles' must be int32, got float32")


def test_byte_length_mismatch():
    buffers = mesh_buffers()
    buffers[0] = buffers[0][:-4]
    raises(LengthMismatch, frames(mesh_header(), *buffers), "'positions' with shape \\[3, 3\\] of float32 needs 36 "
                                                            "bytes, frame has 32")


@pytest.mark.parametrize("bad", [3, 99, -1])
def test_triangle_index_out_of_range(bad):
    raises(IndexOutOfRange, frames(mesh_header(), *mesh_buffers(triangles=np.array([[0, 1, bad]], "<i4"))),
           f"update: mesh: triangles index {bad} is outside \\[0, 3\\)")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(value):
    positions = np.zeros((3, 3), "<f4")
    positions[1, 2] = value
    raises(NonFinite, frames(mesh_header(), *mesh_buffers(positions=positions)), "positions contain NaN or infinity")


def test_oversize_header():
    raises(OverSize, [PROTOCOL_TAG, b" " * (2**20 + 1)], "header is 1048577 bytes; at most 1048576")


def test_oversize_message_against_a_configurable_cap():
    frames_ = [bytes(f) for f in encode(make_update(1000))]
    raises(OverSize, frames_, "at most 10000 allowed", max_message_bytes=10_000)
    assert decode(frames_, max_message_bytes=100_000).mesh.vertex_count == 1000
    with pytest.raises(OverSize):
        encode(make_update(1000), max_message_bytes=10_000)


@pytest.mark.parametrize("mutate, match", [
    (lambda h: h["buffers"].append(dict(h["buffers"][0])), "appears twice"),
    (lambda h: h["buffers"][0].update(name="normals"), "unknown buffer name 'normals'"),
    (lambda h: h["buffers"][0].update(shape=[9]), "shape must be a list of 2 integers from 0 to 2147483647"),
    (lambda h: h["buffers"][0].update(shape=[-3, 3]), "shape must be a list of 2 integers from 0 to 2147483647"),
    (lambda h: h["buffers"][0].pop("dtype"), "exactly name, dtype and shape"),
    (lambda h: h.update(buffers="all of them"), "'buffers' must be a list"),
])
def test_bad_buffer_descriptors(mutate, match):
    header = mesh_header()
    mutate(header)
    buffers = mesh_buffers()
    if isinstance(header["buffers"], list) and len(header["buffers"]) == 4:
        buffers.append(buffers[0])  # the duplicate descriptor gets its own frame
    raises(BadBuffer, frames(header, *buffers), match)


def test_mesh_shape_errors():
    header = mesh_header()
    header["buffers"][0]["shape"] = [3, 2]
    raises(BadBuffer, frames(header, np.zeros((3, 2), "<f4").tobytes(), *mesh_buffers()[1:]),
           r"positions must have shape \(N, 3\), got \(3, 2\)")
    header = mesh_header()
    header["buffers"][2]["shape"] = [2, 4]
    raises(BadBuffer, frames(header, *mesh_buffers()[:2], np.zeros((2, 4), "u1").tobytes()),
           "colors has 2 rows but positions has 3")


def test_required_mesh_missing_or_partial():
    header = mesh_header()
    header["buffers"] = []
    raises(BadBuffer, frames(header), r"update needs exactly one of mesh \(positions, triangles, colors\) and "
                                      "vertex_colors")
    header = mesh_header()
    header["buffers"] = header["buffers"][:2]
    raises(BadBuffer, frames(header, *mesh_buffers()[:2]), "missing colors")


def test_an_update_with_both_a_mesh_and_colours_only_is_refused():
    header = mesh_header()
    header["buffers"].append({"name": "vertex_colors", "dtype": "uint8", "shape": [3, 4]})
    raises(BadBuffer, frames(header, *mesh_buffers(), np.zeros((3, 4), np.uint8).tobytes()), "exactly one of mesh")


def test_mesh_inside_the_json_is_refused():
    raises(BadBuffer, frames({**mesh_header(), "mesh": [[0, 0, 0]]}, *mesh_buffers()), "must travel as buffers")


# --- fuzz: whatever arrives, decoding raises a ProtocolError or returns a message ---

VALID = [bytes(f) for f in encode(make_update(5))]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames([VALID], ["type", "job_id", "step", "buffers", "loss", "new", "request_id"]))
def test_fuzzed_frames_raise_only_protocol_errors(frames_):
    try:
        decode(frames_)
    except ProtocolError as exc:
        assert str(exc)
        assert exc.code in {cls.code for cls in ProtocolError.__subclasses__()} | {"protocol_error"}
