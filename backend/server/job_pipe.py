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

#: Bounds on what the service reads from a job process (a checkpoint is the largest part: tens of MB).
MAX_PARTS = 4096
MAX_PART_BYTES = 4 * 2**30
#: A frame whose first bytes came must be whole within this (a live process writes a frame in one go), and a frame
#: sent must be taken within it.
FRAME_TIMEOUT = 60.0


class PipeClosed(EOFError):
    """The other end closed the pipe (its process ended), or sent something that is not a frame."""


class JobPipe:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        # Writes go through their own handle of the socket: a reader's timeouts (settimeout is per handle) must not
        # cut a write short in another thread.
        self._out = sock.dup()
        # A frame the other end has not taken within this is a process that stopped answering (stuck before its
        # first read, say): the sender gets PipeClosed and can end it, instead of waiting for ever.
        self._out.settimeout(FRAME_TIMEOUT)
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
                self._out.sendall(prefix)
                for part in parts:
                    self._out.sendall(part)
        except OSError as exc:
            raise PipeClosed(f"the pipe is closed ({exc})") from None

    def recv(self, timeout: float | None = None) -> tuple | None:
        """The next tuple; None when nothing arrived within `timeout` seconds (None: wait). Raises PipeClosed."""
        if timeout is not None:
            try:
                readable, _, _ = select.select([self.sock], [], [], timeout)
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
        for handle in (self._out, self.sock):
            try:
                handle.close()
            except OSError:
                pass

    def _exactly(self, n: int, first: bool = False) -> bytearray:
        out = bytearray(n)
        view, got = memoryview(out), 0
        # The first byte was announced by select (or is awaited without limit); the rest belongs to a frame in
        # flight, which a live process finishes at once.
        self.sock.settimeout(None if first else FRAME_TIMEOUT)
        try:
            while got < n:
                read = self.sock.recv_into(view[got:], n - got)
                if read == 0:
                    raise PipeClosed("the other end closed the pipe")
                got += read
                self.sock.settimeout(FRAME_TIMEOUT)
        except OSError as exc:  # socket.timeout included: a frame that stopped half-way
            raise PipeClosed(f"the pipe broke ({exc})") from None
        return out


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
