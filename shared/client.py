"""The client side of the protocol: connect, send commands, and poll decoded events without blocking.

Pure Python + pyzmq + numpy, so Blender's Python can use it as it is. One
client is one DEALER socket; use it from one thread.

    with BackendClient("tcp://127.0.0.1:5555") as client:
        client.submit(JobSpec(prompt="a red cube"))
        while True:
            for event in client.poll(0.1):
                ...  # accepted, progress, update, finished, failed, cancelled, rejected, error, replies

`poll` acknowledges every `update` and `finished` it returns (that is what
grants the server credit to send the next mesh), sends heartbeats when the client has
been quiet, and re-subscribes to its jobs if it was silent long enough for
the server to have forgotten it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProtocolError
from .framing import DEFAULT_MAX_MESSAGE_BYTES
from .jobspec import JobSpec
from .mesh import CornerUVs, MeshData
from .messages import (SERVER_TYPES, Accepted, Ack, Bye, Cancel, Cancelled, Delete, Error, Failed, Finished,
                       Heartbeat, Hello, JobInfo, List, ListReply, Message, Pick, Rejected, Result, Resume, Status,
                       StatusReply, Submit, Update, Watch, Welcome)
from .transport import recv, send
from .version import __version__

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
TERMINAL_EVENTS = (Finished, Failed, Cancelled)


class BackendTimeout(TimeoutError):
    """The backend did not answer in time (not running, wrong address, or wrong keys)."""


@dataclass(frozen=True)
class CurveKeys:
    """What a client needs for an authenticated (CURVE) backend: the server's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: str | Path, client_secret_key: str | Path) -> "CurveKeys":
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(str(Path(server_key).expanduser()))
        public, secret = zmq.auth.load_certificate(str(Path(client_secret_key).expanduser()))
        if not secret:
            raise ValueError(f"{client_secret_key}: holds no secret key (pass the client's .key_secret file)")
        return cls(server_public, public, secret)


class BackendClient:
    def __init__(self, address: str = DEFAULT_ADDRESS, *, curve: CurveKeys | None = None, context: Any = None,
                 name: str = "python", heartbeat_interval: float = 5.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        import zmq

        self._zmq = zmq
        self.address = address
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = heartbeat_interval
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if curve is not None:
            self.socket.curve_serverkey = curve.server_public
            self.socket.curve_publickey = curve.public
            self.socket.curve_secretkey = curve.secret
        self.socket.connect(address)
        self._ids = itertools.count(1)
        self._pending: deque[Message] = deque()
        #: Jobs this client follows (submitted, resumed or watched) and that have not ended.
        self.jobs: set[str] = set()
        self.welcome: Welcome | None = None
        self.last_heard = 0.0
        self._last_sent = time.monotonic()
        self._closed = False
        self._send(Hello(client=f"{name} (blender-dreamfusion {__version__})"))

    # --- commands: each returns the request id its reply will carry -----------------

    def submit(self, spec: JobSpec, init_mesh: MeshData | None = None, init_uvs=None) -> str:
        """Send a job; `init_mesh` (and its own per-corner UVs, `init_uvs`: a numpy (3M) x 2 float32 array or
        shared.mesh.CornerUVs) for init = mesh."""
        if init_uvs is not None and not isinstance(init_uvs, CornerUVs):
            init_uvs = CornerUVs(init_uvs)
        return self._send(Submit(spec=spec, init_mesh=init_mesh, init_uvs=init_uvs))

    def cancel(self, job_id: str) -> str:
        return self._send(Cancel(job_id=job_id))

    def pick(self, job_id: str, candidate: int) -> str:
        """Best of N: pick `candidate` of a job of this client before its choice (answered by `chosen`, or
        `rejected`)."""
        return self._send(Pick(job_id=job_id, candidate=candidate))

    def status(self, job_id: str | None = None, offset: int = 0) -> str:
        return self._send(Status(job_id=job_id, offset=offset))

    def list(self, offset: int = 0) -> str:
        """Ask for one page of jobs from `offset`; the `list_reply` says where the next page starts."""
        return self._send(List(offset=offset))

    def delete(self, job_id: str) -> str:
        return self._send(Delete(job_id=job_id))

    def list_all(self, timeout: float = 10.0) -> list[JobInfo]:
        """Every job this client may see, following the pages (blocks up to `timeout` per page)."""
        jobs: list[JobInfo] = []
        offset: int | None = 0
        while offset is not None:
            reply = self.request(self.list(offset), timeout)
            if not isinstance(reply, (ListReply, StatusReply)):
                raise BackendTimeout(f"the backend answered {reply.TYPE!r} to list: {getattr(reply, 'reason', '')}")
            jobs += reply.jobs
            if reply.next_offset is not None and reply.next_offset <= offset:
                break  # a server that does not move on would loop forever
            offset = reply.next_offset
        return jobs

    def result(self, job_id: str) -> str:
        return self._send(Result(job_id=job_id))

    def resume(self, job_id: str) -> str:
        return self._send(Resume(job_id=job_id))

    def watch(self, job_id: str) -> str:
        self.jobs.add(job_id)
        return self._send(Watch(job_id=job_id))

    # --- events -------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> list[Message]:
        """Every event that has arrived, waiting up to `timeout` seconds for the first. Never blocks longer."""
        self._keep_alive()
        events = list(self._pending)
        self._pending.clear()
        if not events and timeout > 0 and not self.socket.poll(int(timeout * 1000)):
            return []
        while True:
            message = self._receive()
            if message is None:
                return events
            if not isinstance(message, Heartbeat):
                events.append(message)

    def request(self, request_id: str, timeout: float = 10.0) -> Message:
        """Wait for the reply to `request_id`; other events meanwhile stay queued for `poll`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self._pending):
                if message.request_id == request_id:
                    del self._pending[i]
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendTimeout(f"no answer from the backend at {self.address} within {timeout:g} s")
            self._keep_alive()
            if self.socket.poll(int(min(left, 0.25) * 1000)):
                while (message := self._receive()) is not None:
                    if not isinstance(message, Heartbeat):
                        self._pending.append(message)

    def ping(self, timeout: float = 5.0) -> Welcome:
        """Say hello and wait for the welcome: raises BackendTimeout when no backend answers."""
        reply = self.request(self._send(Hello(client="ping")), timeout)
        if not isinstance(reply, Welcome):
            raise BackendTimeout(f"unexpected answer {reply.TYPE!r} from {self.address}")
        return reply

    @property
    def server_alive(self) -> bool:
        """Heard from the backend within three heartbeat intervals."""
        return self.last_heard > 0 and time.monotonic() - self.last_heard < 3 * self.heartbeat_interval

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._send(Bye())
        except Exception:  # closing must not fail because the backend is gone
            pass
        self.socket.close(0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "BackendClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------

    def _send(self, message: Message) -> str:
        request_id = message.request_id or f"r{next(self._ids)}"
        if message.request_id is None and not isinstance(message, (Heartbeat, Ack, Bye)):
            message = _with_request_id(message, request_id)
        try:
            # Never block the caller (Blender's main thread): with no backend connected a DEALER would wait forever.
            send(self.socket, message, flags=self._zmq.NOBLOCK, max_message_bytes=self.max_message_bytes)
        except self._zmq.Again:
            if not isinstance(message, (Heartbeat, Ack, Bye)):
                raise BackendTimeout(f"cannot send to the backend at {self.address}: not connected") from None
        self._last_sent = time.monotonic()
        return request_id

    def _receive(self) -> Message | None:
        zmq = self._zmq
        try:
            message = recv(self.socket, flags=zmq.NOBLOCK, accept=SERVER_TYPES,
                           max_message_bytes=self.max_message_bytes)
        except zmq.Again:
            return None
        except ProtocolError as exc:  # a server we do not understand: say so, keep going
            self.last_heard = time.monotonic()
            return Error(code=exc.code, reason=f"undecodable message from the backend: {exc}"[:2000])
        self.last_heard = time.monotonic()
        if isinstance(message, Welcome):
            self.welcome = message
            if message.heartbeat_interval > 0:
                self.heartbeat_interval = message.heartbeat_interval
        elif isinstance(message, Accepted):
            self.jobs.add(message.job_id)
        elif isinstance(message, TERMINAL_EVENTS) and message.request_id is None:
            self.jobs.discard(message.job_id)
        if isinstance(message, (Update, Finished)):
            # Taking the mesh is what grants the next one (latest wins on the server; results wait their turn).
            self._send(Ack(job_id=message.job_id, step=message.step))
        elif isinstance(message, Rejected) and message.job_id:
            self.jobs.discard(message.job_id)
        return message

    def _keep_alive(self) -> None:
        now = time.monotonic()
        quiet = now - self._last_sent
        if quiet > 2.5 * self.heartbeat_interval:
            # Long enough for the server to have dropped us: subscribe again to what we follow.
            for job_id in sorted(self.jobs):
                self._send(Watch(job_id=job_id, request_id=f"rewatch-{next(self._ids)}"))
        if quiet > self.heartbeat_interval:
            self._send(Heartbeat(time=time.time()))


def _with_request_id(message: Message, request_id: str) -> Message:
    import dataclasses

    return dataclasses.replace(message, request_id=request_id)
