"""The job service: one ROUTER socket, a job queue, worker threads; who hears what is in `subscribers`.

Only the loop thread touches the socket. Workers hand their messages to
`_outbox` and ring an inproc bell, so an update goes out as soon as it is made.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from shared import (CLIENT_TYPES, Ack, Accepted, Bye, Cancel, Cancelled, Error, Finished, Heartbeat,
                    Hello, List, ListReply, Message, ProtocolError, Rejected, Result, Resume, Status, StatusReply,
                    Submit, Watch, Welcome, __version__, model_kind)
from shared.errors import BadJobSpec
from shared.messages import JobCommand
from shared.transport import recv_routed, send_routed

from ..generate import resolve_device
from .jobs import RESUMABLE, TERMINAL, JobStore, default_data_dir
from .security import check_bind, zmq_endpoint
from .subscribers import ENDINGS, Subscribers
from .worker import Control, GuidanceCache, Worker

#: Messages read per loop turn before the outbox gets its turn, so a flood cannot starve the jobs' events.
READ_BATCH = 64


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    workers: int = 1
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    curve_dir: Path | None = None
    device: str = "auto"
    heartbeat_interval: float = 5.0
    max_message_bytes: int = 256 * 2**20


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        keys = check_bind(config.bind, config.curve_dir)  # refuses before anything is opened
        device = resolve_device(config.device)
        self.context = zmq.Context()
        self._auth = None
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client keeps its identity
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.context)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized))
            self.socket.curve_secretkey = keys.secret
            self.socket.curve_publickey = keys.public
            self.socket.curve_server = True
        self.socket.bind(zmq_endpoint(config.bind))
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bell = self.context.socket(zmq.PULL)
        self._bell_address = f"inproc://bell-{id(self)}"
        self._bell.bind(self._bell_address)
        self._bell_local = threading.local()
        self._bells: list[zmq.Socket] = []
        self._bells_lock = threading.Lock()

        self.store = JobStore(config.data_dir)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._outbox: queue.Queue[Message] = queue.Queue()
        self._controls: dict[str, Control] = {}
        self.subscribers = Subscribers()
        self._stop = threading.Event()
        guidance = GuidanceCache()
        self._workers = [Worker(f"worker-{i}", self.store, self._queue, self._emit, self._controls, self._stop,
                                device, guidance) for i in range(max(1, config.workers))]
        for record in self.store.load():
            self._queue.put(record.job_id)

    # --- running --------------------------------------------------------------------

    def serve_forever(self) -> None:
        for worker in self._workers:
            worker.start()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._bell, zmq.POLLIN)
        tick = max(0.01, min(1.0, self.config.heartbeat_interval / 4))
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(int(tick * 1000)))
                if self.socket in ready:
                    self._read_messages()
                if self._bell in ready:
                    while self._bell.poll(0):
                        self._bell.recv()
                self._send_outbox()
                self._heartbeats()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to end (from any thread or a signal handler); running jobs become `interrupted`."""
        self._stop.set()

    def held_updates(self, peer: bytes | None = None) -> int:
        """Updates waiting for credit (for one peer, or all). Tests and diagnostics read this."""
        return self.subscribers.held(peer)

    def _shutdown(self) -> None:
        self._stop.set()  # running jobs stop after their step and become `interrupted`
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
        with self._bells_lock:
            for bell in self._bells:
                bell.close(0)
        self._bell.close(0)
        self.socket.close(0)
        if self._auth is not None:
            self._auth.stop()
        self.context.term()

    # --- from the workers -------------------------------------------------------------

    def _emit(self, message: Message) -> None:
        """Called from worker threads: queue the message and wake the loop."""
        self._outbox.put(message)
        bell = getattr(self._bell_local, "socket", None)
        if bell is None:
            bell = self._bell_local.socket = self.context.socket(zmq.PUSH)
            bell.setsockopt(zmq.LINGER, 0)
            bell.setsockopt(zmq.SNDHWM, 1)
            bell.connect(self._bell_address)
            with self._bells_lock:
                self._bells.append(bell)
        try:
            bell.send(b"", zmq.NOBLOCK)
        except zmq.Again:  # the bell is already ringing
            pass

    def _send_outbox(self) -> None:
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._publish(message)

    def _publish(self, message: Message) -> None:
        for peer, out in self.subscribers.route(message):
            self._send(peer, out)
        if isinstance(message, ENDINGS):
            self._controls.pop(message.job_id, None)  # type: ignore[attr-defined]

    # --- from the clients ---------------------------------------------------------------

    def _read_messages(self) -> None:
        for _ in range(READ_BATCH):
            try:
                peer, message = recv_routed(self.socket, flags=zmq.NOBLOCK, accept=CLIENT_TYPES,
                                            max_message_bytes=self.config.max_message_bytes)
            except zmq.Again:
                return
            except BadJobSpec as exc:
                self._heard(exc.peer)
                spec_error = exc.spec_error
                self._send(exc.peer, Rejected(reason=str(spec_error), field=spec_error.field,
                                              request_id=exc.request_id))
                continue
            except ProtocolError as exc:
                self._heard(exc.peer)
                self._send(exc.peer, Error.from_exception(exc))
                continue
            self._heard(peer)
            try:
                self._handle(peer, message)
            except Exception as exc:  # a bug in handling one message must not stop the service
                print(f"dreamfusion-backend serve: error handling {message.TYPE}: {exc!r}", file=sys.stderr)
                self._send(peer, Error(code="internal", reason=f"{message.TYPE}: {type(exc).__name__}: {exc}"[:2000],
                                       request_id=message.request_id))

    def _handle(self, peer: bytes, message: Message) -> None:
        rid = message.request_id
        if isinstance(message, Hello):
            self._send(peer, Welcome(server=f"dreamfusion-backend {__version__}",
                                     heartbeat_interval=self.config.heartbeat_interval,
                                     max_message_bytes=self.config.max_message_bytes, request_id=rid))
        elif isinstance(message, Heartbeat):
            pass  # being heard is all it is for
        elif isinstance(message, Submit):
            self._submit(peer, message)
        elif isinstance(message, Ack):
            self._ack(peer, message)
        elif isinstance(message, Bye):
            self.subscribers.forget(peer)
        elif isinstance(message, List):
            self._send(peer, ListReply(jobs=[r.info() for r in self.store.all()], request_id=rid))
        elif isinstance(message, Status):
            if message.job_id is None:
                self._send(peer, StatusReply(jobs=[r.info() for r in self.store.all()], request_id=rid))
            elif (record := self._known(peer, message)) is not None:
                self._send(peer, StatusReply(jobs=[record.info()], request_id=rid))
        elif isinstance(message, Watch):
            if (record := self._known(peer, message)) is not None:
                self._subscribe(peer, record.job_id)
                self._send(peer, StatusReply(jobs=[record.info()], request_id=rid))
        elif isinstance(message, Cancel):
            self._cancel(peer, message)
        elif isinstance(message, Result):
            self._result(peer, message)
        elif isinstance(message, Resume):
            self._resume(peer, message)

    def _submit(self, peer: bytes, message: Submit) -> None:
        spec = message.spec
        problem = _precheck(spec, self.store)
        if problem is not None:
            field_name, reason = problem
            self._send(peer, Rejected(reason=reason, field=field_name, request_id=message.request_id))
            return
        if spec.init == "checkpoint" and self.store.get(spec.init_from) is not None:
            # Continuing another job: the spec records the checkpoint file it started from.
            spec = dataclasses.replace(spec, init_from=str(self.store.checkpoint(spec.init_from)))
        record = self.store.create(spec)
        self._subscribe(peer, record.job_id)
        self._send(peer, Accepted(job_id=record.job_id, spec=spec, request_id=message.request_id))
        self._queue.put(record.job_id)

    def _ack(self, peer: bytes, message: Ack) -> None:
        held = self.subscribers.ack(peer, message.job_id)
        if held is not None:
            self._send(peer, held)  # the credit goes straight to the newest held update

    def _cancel(self, peer: bytes, message: Cancel) -> None:
        record = self._known(peer, message)
        if record is None:
            return
        if record.state in TERMINAL or record.state == "interrupted":
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; there is nothing to cancel")
            return
        self._subscribe(peer, record.job_id)  # the one who cancels hears that it happened
        control = self._controls.setdefault(record.job_id, Control())
        control.cancel = True
        # Not picked up yet: the worker will skip it, so answer at once. (Running: the worker answers.)
        if self.store.transition(record.job_id, ("queued",), "cancelled", reason="cancelled by a client"):
            self._publish(Cancelled(job_id=record.job_id, step=record.step))

    def _result(self, peer: bytes, message: Result) -> None:
        record = self._known(peer, message)
        if record is None:
            return
        mesh = self.store.load_mesh(record.job_id) if record.state == "finished" else None
        if mesh is None:
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; a result exists once it has "
                                        "finished")
            return
        self._send(peer, Finished(job_id=record.job_id, step=record.step, elapsed=record.elapsed,
                                  checkpoint=str(self.store.checkpoint(record.job_id)), files=record.files,
                                  mesh=mesh, request_id=message.request_id))

    def _resume(self, peer: bytes, message: Resume) -> None:
        record = self._known(peer, message)
        if record is None:
            return
        if record.state not in RESUMABLE:
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; only "
                                        f"{', '.join(RESUMABLE)} jobs can be resumed")
            return
        self._controls.pop(record.job_id, None)
        if not self.store.transition(record.job_id, RESUMABLE, "queued", reason=""):
            return
        self._subscribe(peer, record.job_id)
        self._send(peer, Accepted(job_id=record.job_id, spec=record.spec, request_id=message.request_id))
        self._queue.put(record.job_id)

    # --- helpers ----------------------------------------------------------------------------

    def _known(self, peer: bytes, message: JobCommand | Status):
        record = self.store.get(message.job_id)
        if record is None:
            self._refuse(peer, message, f"no job {message.job_id!r} on this backend")
        return record

    def _refuse(self, peer: bytes, message: JobCommand | Status, reason: str) -> None:
        self._send(peer, Rejected(reason=reason, field="job_id", job_id=message.job_id,
                                  request_id=message.request_id))

    def _subscribe(self, peer: bytes, job_id: str) -> None:
        self.subscribers.subscribe(peer, job_id)

    def _heard(self, peer: bytes) -> None:
        self.subscribers.heard(peer, time.monotonic())

    def _send(self, peer: bytes, message: Message) -> None:
        try:
            send_routed(self.socket, peer, message, flags=zmq.NOBLOCK,
                        max_message_bytes=self.config.max_message_bytes)
        except zmq.Again:  # the client's queue is full: it is not reading; what matters is resent or held
            return
        except zmq.ZMQError:  # the peer went away between its message and our answer
            return
        self.subscribers.sent(peer, time.monotonic())

    def _heartbeats(self) -> None:
        if self.config.heartbeat_interval <= 0:
            return
        for peer in self.subscribers.check_liveness(time.monotonic(), self.config.heartbeat_interval):
            self._send(peer, Heartbeat(time=time.time()))


def _precheck(spec, store: JobStore) -> tuple[str, str] | None:
    """What can be refused at submit time, cheaply, as (field, reason)."""
    if spec.init == "mesh":
        return "init", "init = mesh is not supported by this backend yet; allowed: blob, checkpoint"
    if spec.init == "checkpoint":
        path = store.checkpoint(spec.init_from) if store.get(spec.init_from) else Path(spec.init_from).expanduser()
        if not path.is_file():
            return "init_from", f"init_from = {spec.init_from!r}: no such job with a checkpoint, nor checkpoint file"
    if model_kind(spec.model) == "local" and not Path(spec.model).expanduser().is_dir():
        return "model", f"model = {spec.model!r}: no such folder on the backend's machine"
    if model_kind(spec.model) == "builtin":
        from ..toy.vocab import VocabularyError, parse_prompt

        try:
            parse_prompt(spec.prompt)
        except VocabularyError as exc:
            return "prompt", str(exc)
    return None

