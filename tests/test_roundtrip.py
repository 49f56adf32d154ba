"""Every message type and JobSpec survive encode -> decode unchanged."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_dreamfusion.shared import JobSpec, MESSAGE_TYPES, decode, encode
from blender_dreamfusion.shared.messages import CLIENT_TYPES, SERVER_TYPES
from tests.helpers.strategies import jobspecs, messages_of


@given(jobspecs())
def test_jobspec_dict_round_trip(spec):
    assert JobSpec.from_dict(spec.to_dict()) == spec


@given(jobspecs())
def test_jobspec_survives_json(spec):
    text = json.dumps(spec.to_dict(), allow_nan=False)
    assert JobSpec.from_dict(json.loads(text)) == spec


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_message_round_trip(message_type, data):
    cls = MESSAGE_TYPES[message_type]
    message = data.draw(messages_of(cls))
    frames = [bytes(f) for f in encode(message)]
    accept = CLIENT_TYPES if message_type in CLIENT_TYPES else SERVER_TYPES
    decoded = decode(frames, accept=accept)
    assert type(decoded) is cls
    assert decoded == message
    # Encoding is deterministic, so re-encoding gives the same bytes.
    assert [bytes(f) for f in encode(decoded)] == frames


def test_every_direction_is_covered():
    assert CLIENT_TYPES | SERVER_TYPES == set(MESSAGE_TYPES)
    assert {"hello", "submit", "cancel", "status", "list", "ack", "bye", "heartbeat"} <= CLIENT_TYPES
    assert {"welcome", "accepted", "rejected", "progress", "update", "finished", "failed", "cancelled", "error",
            "heartbeat", "status_reply", "list_reply"} <= SERVER_TYPES


def test_decoded_buffers_are_views_of_the_frames():
    from tests.helpers.messages import make_update

    frames = [bytearray(f) for f in encode(make_update(1000))]
    decoded = decode(frames)
    assert not decoded.mesh.positions.flags.writeable
    names = [b["name"] for b in json.loads(frames[1])["buffers"]]
    frame = frames[2 + names.index("positions")]
    assert np.shares_memory(decoded.mesh.positions, np.frombuffer(frame, np.uint8))
