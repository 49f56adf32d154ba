"""Send and receive messages on ZeroMQ sockets, zero-copy for the big buffers.

ROUTER sockets prepend the peer's routing id; `recv_routed`/`send_routed`
handle that envelope so the server never mixes it up with protocol frames.
"""

from __future__ import annotations

from typing import Any, Iterable

from .framing import DEFAULT_MAX_MESSAGE_BYTES, decode, encode
from .messages import Message

# Below this, copying is cheaper than ZeroMQ's zero-copy bookkeeping.
_COPY_THRESHOLD = 64 * 1024


def send(socket: Any, message: Message, *, flags: int = 0,
         max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    frames = encode(message, max_message_bytes)
    socket.send_multipart(frames, flags=flags, copy=_should_copy(frames))


def recv(socket: Any, *, flags: int = 0, accept: Iterable[str] | None = None,
         max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Receive and decode one message; raises ProtocolError for a bad one (it is consumed either way)."""
    frames = socket.recv_multipart(flags=flags, copy=False)
    return decode(frames, accept=accept, max_message_bytes=max_message_bytes)


def send_routed(socket: Any, peer: bytes, message: Message, *, flags: int = 0,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    frames = encode(message, max_message_bytes)
    socket.send_multipart([peer, *frames], flags=flags, copy=_should_copy(frames))


def recv_routed(socket: Any, *, flags: int = 0, accept: Iterable[str] | None = None,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[bytes, Message]:
    """(peer routing id, message) from a ROUTER socket.

    A bad message raises ProtocolError with `.peer` set, so the caller can
    answer `error` to the right client.
    """
    frames = socket.recv_multipart(flags=flags, copy=False)
    peer = frames[0].bytes
    try:
        return peer, decode(frames[1:], accept=accept, max_message_bytes=max_message_bytes)
    except Exception as exc:
        exc.peer = peer  # type: ignore[attr-defined]
        raise


def _should_copy(frames: list[Any]) -> bool:
    return sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames) < _COPY_THRESHOLD
