"""The pipe between a plain server and its job processes: tuples of JSON values, bytes and numpy arrays, framed
on a stream socket. No pickle: a job process works on whatever a client sent, so the service reads it as it
reads any peer (a JSON header, raw buffers described by dtype and shape), and checks its reports after that
(`node_reports`).

A frame is a little-endian u32 part count, a u64 length per part, then the parts: part 0 is the JSON header
(the item with each buffer replaced by {"$buffer": index, "dtype": ..., "shape": ...}), the rest the buffers.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
from typing import Any

import numpy as np

#: The environment variable that hands a job process the secret it proves itself with when it connects back.
SECRET_VARIABLE = "DREAMFUSION_JOB_SECRET"
#: Bounds on what the service reads from a job process (a checkpoint is the largest part: tens of MB).
MAX_PARTS = 4096
MAX_PART_BYTES = 4 * 2**30
#: Seconds a frame may stall, either way: one whose first bytes came must go on arriving, one being sent must go on
#: being taken (a live process reads and writes a frame in one go).
FRAME_TIMEOUT = 60.0


class PipeClosed(EOFError):
    """The other end closed the pipe (its process ended), or sent something that is not a frame."""


class JobPipe:
    """One thread may receive while others send. The socket stays in blocking mode throughout, and every deadline is
    a poll (`ready`): Python's per-socket timeouts switch the shared file description between blocking and
    non-blocking, which would pull the rug from under the other direction's thread."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setblocking(True)
        self._send_lock = threading.Lock()

    def send(self, item: tuple) -> None:
        """Send one tuple (from any thread). Raises PipeClosed when the other end is gone."""
        buffers: list = []
        header = json.dumps(_encode(item, buffers)).encode()
        parts = [header, *buffers]
        lengths = [len(header), *(_nbytes(b) for b in buffers)]
        prefix = struct.pack(f"<I{len(parts)}Q", len(parts), *lengths)
        try:
            with self._send_lock:
                for part in (prefix, *parts):
                    self._send_all(memoryview(part).cast("B") if _nbytes(part) else b"")
        except OSError as exc:
            raise PipeClosed(f"the pipe is closed ({exc})") from None

    def recv(self, timeout: float | None = None) -> tuple | None:
        """The next tuple; None when nothing arrived within `timeout` seconds (None: wait). Raises PipeClosed."""
        if timeout is not None:
            try:
                readable = ready(self.sock, timeout)
            except (OSError, ValueError) as exc:
                raise PipeClosed(f"the pipe is closed ({exc})") from None
            if not readable:
                return None
        (count,) = struct.unpack("<I", self._exactly(4, first=True))
        if not 1 <= count <= MAX_PARTS:
            raise PipeClosed(f"a frame of {count} parts")
        lengths = struct.unpack(f"<{count}Q", self._exactly(8 * count))
        if any(length > MAX_PART_BYTES for length in lengths):
            raise PipeClosed("a frame part over the size limit")
        header, *buffers = (self._exactly(length) for length in lengths)
        try:
            item = _decode(json.loads(header), buffers)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise PipeClosed(f"a frame that cannot be read ({type(exc).__name__}: {exc})") from None
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise PipeClosed("a frame that is not a report")
        return tuple(item)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _send_all(self, view) -> None:
        """Send every byte without blocking on a peer that takes nothing: a frame the other end has not taken any
        of for FRAME_TIMEOUT is a process that stopped answering (stuck before its first read, say), so the
        sender gets PipeClosed and can end it instead of waiting for ever."""
        if _DONTWAIT is None:  # Windows: no per-call non-blocking send; a plain blocking one
            self.sock.sendall(view)
            return
        while len(view):
            try:
                view = view[self.sock.send(view, _DONTWAIT):]
            except BlockingIOError:
                writable = ready(self.sock, FRAME_TIMEOUT, write=True)
                if not writable:
                    raise PipeClosed(f"the other end took nothing for {FRAME_TIMEOUT:g} s") from None

    def _exactly(self, n: int, first: bool = False) -> bytearray:
        """`n` bytes. The first read of a frame waits as long as it must (`ready` announced it, or the caller waits
        without limit); the rest belongs to a frame in flight, which a live process finishes at once."""
        out = bytearray(n)
        view, got = memoryview(out), 0
        try:
            while got < n:
                if not (first and got == 0):
                    readable = ready(self.sock, FRAME_TIMEOUT)
                    if not readable:
                        raise PipeClosed(f"a frame stopped half-way for {FRAME_TIMEOUT:g} s")
                read = self.sock.recv_into(view[got:], n - got)
                if read == 0:
                    raise PipeClosed("the other end closed the pipe")
                got += read
        except (OSError, ValueError) as exc:
            raise PipeClosed(f"the pipe broke ({exc})") from None
        return out


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)


def ready(sock: socket.socket, timeout: float, write: bool = False) -> bool:
    """Whether `sock` can be read (or written) within `timeout` seconds; a closed or broken one counts as ready
    (the next read says so). poll(), not select(): a long-running server's descriptors pass select's limit of
    1024, where select() raises instead of waiting."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(timeout * 1000.0))
    readable, writable, _ = select.select([] if write else [sock], [sock] if write else [], [], timeout)
    return bool(readable or writable)


def _nbytes(buffer) -> int:
    return buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)


def _encode(value: Any, buffers: list) -> Any:
    if isinstance(value, (bytes, bytearray)):
        buffers.append(value)
        return {"$buffer": len(buffers) - 1}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.kind not in "biuf":
            raise TypeError(f"cannot send an array of {value.dtype}")
        array = np.ascontiguousarray(value)
        buffers.append(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
        return {"$buffer": len(buffers) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, buffers) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("mapping keys must be strings")
        if "$buffer" in value:
            raise TypeError("'$buffer' is a reserved key")
        return {k: _encode(v, buffers) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__}")


def _decode(value: Any, buffers: list[bytearray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, buffers) for v in value]
    if isinstance(value, dict):
        if "$buffer" not in value:
            return {k: _decode(v, buffers) for k, v in value.items()}
        data = buffers[value["$buffer"]]
        if "dtype" not in value:
            return bytes(data)
        dtype = np.dtype(value["dtype"])
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ValueError(f"an array of {dtype}")
        shape = tuple(int(n) for n in value["shape"])
        return np.frombuffer(data, dtype=dtype).reshape(shape)  # writable: the buffer is a fresh bytearray
    return value
