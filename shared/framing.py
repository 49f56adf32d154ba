"""Messages <-> multipart frames: [tag, JSON header, raw buffers...].

Decoding checks, in this order, and raises the specific ProtocolError for
the first failure: total size, frame count, tag, header size, UTF-8/JSON,
type, buffer descriptors, frame lengths, header fields, mesh contents.
Buffers become read-only numpy views of the received frames (no copy).
Nothing here unpickles: JSON and raw little-endian arrays only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import (BadBuffer, BadDtype, BadJSON, BadTag, FrameCountMismatch, LengthMismatch, MissingType,
                     OverSize, ProtocolError, UnexpectedType, UnknownType)
from .mesh import MeshData
from .messages import (CLIENT_TYPES, MESSAGE_TYPES, SERVER_TYPES, ID_PATTERN, Message, buffer_fields,
                       buffer_class)
from .version import PROTOCOL_TAG
from .wirefields import build_dataclass, to_json_value

MAX_HEADER_BYTES = 2**20
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
#: Wire dtype names -> numpy dtypes. Nothing else is accepted.
DTYPES = {"uint8": np.dtype("u1"), "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_BUFFERS = 8
#: Deepest nesting of JSON arrays/objects a header may have (a spec needs 3); deeper ones are refused up front,
#: before printing or validating them could recurse without bound.
MAX_JSON_DEPTH = 32
#: Longest object key anywhere in a header.
MAX_KEY_CHARS = 256
#: Largest extent of one buffer axis (numpy and every consumer index with int32/int64 safely below this).
MAX_DIM = 2**31 - 1

Frame = Any  # bytes, bytearray, memoryview or zmq.Frame


def encode(message: Message, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[Any]:
    """Frames for `message`; buffers are memoryviews of its arrays (send with copy=False)."""
    cls = type(message)
    header: dict[str, Any] = {"type": cls.TYPE}
    skip = buffer_fields(cls)
    for f in dataclasses.fields(message):
        if f.name in skip:
            continue
        value = getattr(message, f.name)
        if f.name == "request_id" and value is None:
            continue
        header[f.name] = to_json_value(value)
    descriptors, payloads = [], []
    for name, array in _buffers_of(message):
        array = np.ascontiguousarray(array)
        descriptors.append({"name": name, "dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape)})
        payloads.append(memoryview(array.reshape(-1).view(np.uint8)))
    header["buffers"] = descriptors
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(head) > MAX_HEADER_BYTES:
        raise OverSize(f"header is {len(head)} bytes; at most {MAX_HEADER_BYTES} allowed", message_type=cls.TYPE)
    total = len(PROTOCOL_TAG) + len(head) + sum(p.nbytes for p in payloads)
    if total > max_message_bytes:
        raise OverSize(f"message is {total} bytes; at most {max_message_bytes} allowed", message_type=cls.TYPE)
    return [PROTOCOL_TAG, head, *payloads]


def decode(frames: Sequence[Frame], *, accept: Iterable[str] | None = None,
           max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """The message in `frames`, or the specific ProtocolError.

    `accept` limits the types (use `CLIENT_TYPES` on a server, `SERVER_TYPES`
    on a client); a known type outside it raises UnexpectedType.
    """
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > max_message_bytes:
        raise OverSize(f"message is {total} bytes; at most {max_message_bytes} allowed")
    if len(views) < 2:
        raise FrameCountMismatch(f"need at least 2 frames (tag, JSON header), got {len(views)}")
    if views[0] != PROTOCOL_TAG:
        got = bytes(views[0][:40])
        raise BadTag(f"frame 0 must be {PROTOCOL_TAG.decode()!r}, got {got!r}")
    if views[1].nbytes > MAX_HEADER_BYTES:
        raise OverSize(f"header is {views[1].nbytes} bytes; at most {MAX_HEADER_BYTES} allowed")
    header = _parse_header(views[1])
    request_id = _request_id(header)
    message_type = header.get("type")
    try:
        cls = _message_class(message_type, accept)
        arrays = _read_buffers(header.pop("buffers", []), views[2:], cls)
        fields = {k: v for k, v in header.items() if k != "type"}
        buffers = _assemble_buffers(cls, arrays)
        return _build(cls, fields, buffers)
    except ProtocolError as exc:
        exc.request_id = exc.request_id or request_id
        if exc.message_type is None and isinstance(message_type, str) and message_type in MESSAGE_TYPES:
            exc.message_type = message_type
            exc.args = (f"{message_type}: {exc.detail}",)
        raise


def _view(frame: Frame) -> memoryview:
    buffer = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer without copying
    view = memoryview(buffer)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _parse_header(view: memoryview) -> dict[str, Any]:
    try:
        text = bytes(view).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadJSON(f"header is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise BadJSON(f"header must be a JSON object, got {type(header).__name__}")
    _check_shape_of_json(header)
    return header


def _check_shape_of_json(value: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and keys longer than MAX_KEY_CHARS (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadJSON(f"header nests arrays/objects more than {MAX_JSON_DEPTH} deep")
        if isinstance(node, dict):
            for key, item in node.items():
                if len(key) > MAX_KEY_CHARS:
                    raise BadJSON(f"header has an object key of {len(key)} characters; at most {MAX_KEY_CHARS} "
                                  "allowed")
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node if isinstance(item, (dict, list)))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _request_id(header: dict[str, Any]) -> str | None:
    rid = header.get("request_id")
    return rid if isinstance(rid, str) and re.fullmatch(ID_PATTERN, rid) else None


def _message_class(message_type: Any, accept: Iterable[str] | None) -> type[Message]:
    if message_type is None:
        raise MissingType("header has no 'type'")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        shown = repr(message_type)[:64]
        raise UnknownType(f"unknown message type {shown}; known: {', '.join(MESSAGE_TYPES)}")
    if accept is not None and message_type not in set(accept):
        sender = MESSAGE_TYPES[message_type].SENDER
        raise UnexpectedType(f"{message_type!r} is sent by the {sender}, not accepted here",
                             message_type=message_type)
    return MESSAGE_TYPES[message_type]


def _read_buffers(descriptors: Any, frames: list[memoryview], cls: type[Message]) -> dict[str, np.ndarray]:
    if not isinstance(descriptors, list):
        raise BadBuffer(f"'buffers' must be a list, got {type(descriptors).__name__}")
    if len(descriptors) > MAX_BUFFERS:
        raise BadBuffer(f"{len(descriptors)} buffers declared; at most {MAX_BUFFERS} allowed")
    if len(descriptors) != len(frames):
        raise FrameCountMismatch(f"header declares {len(descriptors)} buffers but {len(frames)} buffer "
                                 f"frames follow it")
    allowed = _buffer_names(cls)
    arrays: dict[str, np.ndarray] = {}
    for index, (desc, frame) in enumerate(zip(descriptors, frames)):
        where = f"buffers[{index}]"
        if not isinstance(desc, dict) or set(desc) != {"name", "dtype", "shape"}:
            raise BadBuffer(f"{where} must be an object with exactly name, dtype and shape")
        name, dtype_name, shape = desc["name"], desc["dtype"], desc["shape"]
        if not isinstance(name, str) or name not in allowed:
            raise BadBuffer(f"{where}: unknown buffer name {str(name)[:64]!r}; "
                            f"{cls.TYPE} takes {', '.join(allowed) or 'no buffers'}")
        if name in arrays:
            raise BadBuffer(f"{where}: buffer {name!r} appears twice")
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise BadDtype(f"buffer {name!r} has dtype {str(dtype_name)[:32]!r}; allowed: uint8, int32, float32")
        expected_dtype, rank = allowed[name]
        if DTYPES[dtype_name] != expected_dtype:
            raise BadDtype(f"buffer {name!r} must be {_DTYPE_NAMES[expected_dtype]}, got {dtype_name}")
        if (not isinstance(shape, list) or len(shape) != rank
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape)):
            raise BadBuffer(f"buffer {name!r} shape must be a list of {rank} integers from 0 to {MAX_DIM}, got "
                            f"{str(shape)[:64]}")
        expected = math.prod(shape) * expected_dtype.itemsize
        if frame.nbytes != expected:
            raise LengthMismatch(f"buffer {name!r} with shape {shape} of {dtype_name} needs {expected} bytes, "
                                 f"frame has {frame.nbytes}")
        array = np.frombuffer(frame, dtype=expected_dtype).reshape(shape)
        array.flags.writeable = False  # a view of a received frame: copy before changing it
        arrays[name] = array
    return arrays


def _buffer_names(cls: type[Message]) -> dict[str, tuple[np.dtype, int]]:
    """Wire buffer name -> (dtype, rank) that `cls` takes."""
    names: dict[str, tuple[np.dtype, int]] = {}
    for field_name in sorted(buffer_fields(cls)):
        kind = buffer_class(cls, field_name)
        for part, name in _part_names(kind, field_name).items():
            names[name] = kind.WIRE_PARTS[part]
    return names


def _part_names(kind: type, field_name: str) -> dict[str, str]:
    """A buffer class's part -> the wire buffer's name for `field_name`: a one-part class travels under the
    field's name (`preview`); a mesh's parts under a prefix (`mesh` as positions/..., `init_mesh` as
    init_positions/...); any other's as field_part (`texture_uvs`, `texture_image`)."""
    if list(kind.WIRE_PARTS) == [""]:
        return {"": field_name}
    if kind is MeshData:
        return {part: mesh_prefix(field_name) + part for part in kind.WIRE_PARTS}
    return {part: f"{field_name}_{part}" for part in kind.WIRE_PARTS}


def field_buffer_names(cls: type[Message], field_name: str) -> list[str]:
    """The wire buffers a buffer field travels as."""
    return list(_part_names(buffer_class(cls, field_name), field_name).values())


def mesh_prefix(field_name: str) -> str:
    """`mesh` travels as positions/triangles/colors; `init_mesh` as init_positions/..."""
    return "" if field_name == "mesh" else field_name.removesuffix("mesh")


def _buffers_of(message: Message) -> list[tuple[str, np.ndarray]]:
    out = []
    cls = type(message)
    for field_name in sorted(buffer_fields(cls)):
        value = getattr(message, field_name)
        if value is None:
            continue
        names = _part_names(type(value), field_name)
        out += [(names[part], array) for part, array in value.wire_arrays().items()]
    return out


def _assemble_buffers(cls: type[Message], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field_name in buffer_fields(cls):
        kind = buffer_class(cls, field_name)
        names = _part_names(kind, field_name)
        present = [n for n in names.values() if n in arrays]
        if not present:
            continue
        if len(present) != len(names):
            missing = ", ".join(n for n in names.values() if n not in arrays)
            raise BadBuffer(f"{field_name} needs buffers {', '.join(names.values())}; missing {missing}")
        try:
            values[field_name] = kind.from_wire({part: arrays[name] for part, name in names.items()})
        except ProtocolError as exc:  # name the field: "init_mesh: triangles index 9 is outside [0, 4)"
            raise type(exc)(f"{field_name}: {exc}") from None
    return values


def _build(cls: type[Message], fields: dict[str, Any], buffers: dict[str, Any]) -> Message:
    skip = buffer_fields(cls)
    for name in skip:
        if name in fields:
            raise BadBuffer(f"{name!r} must travel as buffers, not in the JSON header")
    for f in dataclasses.fields(cls):
        if f.name in skip and f.default is dataclasses.MISSING and f.name not in buffers:
            raise BadBuffer(f"{f.name} is required: buffers {', '.join(field_buffer_names(cls, f.name))}")
    return build_dataclass(cls, fields, "", skip=skip, extra=buffers)
