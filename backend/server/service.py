"""The job service: a ROUTER socket and a job runner (job processes or Ray actors); who hears what: `subscribers`.

Only the loop thread touches the socket. The runner's threads hand jobs' messages to
`_outbox` and ring an inproc bell, so an update goes out as soon as it is made.

No message can stop the loop: whatever decoding, checking or handling one
message raises becomes one `error` (or `rejected`) reply, built only from
checked, escaped text, and the loop goes on (`handle_frames`).
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import recv_monitor_message

from blender_dreamfusion.shared import (CLIENT_TYPES, Ack, Accepted, Bye, Cancel, Cancelled, Chosen, Delete, Deleted,
                                        Error, Finished, Heartbeat, Hello, List, ListReply, Message, Pick, Progress,
                                        ProtocolError, Rejected, Result, Resume, Status, StatusReply, Submit, Watch,
                                        Welcome, __version__, decode)
from blender_dreamfusion.shared.errors import MAX_FIELD_NAME, BadJobSpec, safe_text
from blender_dreamfusion.shared.messages import JobCommand
from blender_dreamfusion.shared.transport import send_routed
from blender_dreamfusion.shared.knobs import MAX_TEXT
from blender_dreamfusion.shared.states import ACTIVE, CANCELLED, FINISHED, INTERRUPTED, QUEUED, RESUMABLE, TERMINAL

from ..job_run import resolve_device
from ..threads import ThreadPolicy
from ..work_budget import OverBudget, WorkBudget, check_work
from .admission import PathPolicy, Refused, ServerLimits, admit, format_size
from .jobs import DamagedJob, JobRecord, JobStore, default_data_dir
from .security import check_bind, zmq_endpoint
from .sessions import Session, Sessions
from .subscribers import ENDINGS, Subscribers
from .process_runner import JobRunner, ProcessRunner

if TYPE_CHECKING:
    from .ray_runner import RayOptions

#: Messages read per loop turn before the outbox gets its turn, so a flood cannot starve the jobs' events.
READ_BATCH = 64
#: A line longer than this tells only its first jobs their place (each move would otherwise cost a message per job).
ANNOUNCED_POSITIONS = 64
#: Said when even describing a failure failed; fixed text, so it cannot fail in turn.
_LAST_RESORT = "the message could not be handled"


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    workers: int = 1
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    curve_dir: Path | None = None
    device: str = "auto"
    heartbeat_interval: float = 5.0
    max_message_bytes: int = 256 * 2**20
    limits: ServerLimits = ServerLimits()
    #: Folders (besides the data folder) whose files jobs may name: local models, checkpoints.
    allow_paths: tuple[Path, ...] = ()
    #: Whether clients may see (list, watch, fetch) each other's jobs; None: yes on loopback, no under CURVE.
    shared_jobs: bool | None = None
    #: Train jobs as Ray actors on a cluster (`serve --ray`) instead of job processes here; None: here.
    ray: "RayOptions | None" = None
    #: CPU threads per job (None: this machine's usable cores, less `reserve_cores`, split between the workers;
    #: `backend/threads.py`), and cores left to other work (the add-on's local backend leaves Blender one).
    threads: int | None = None
    reserve_cores: int = 0


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        keys = check_bind(config.bind, config.curve_dir)  # refuses before anything is opened
        # A gateway trains nothing itself: each node resolves the device for the jobs it runs.
        device = resolve_device(config.device) if config.ray is None else None
        self.curve = keys is not None
        self.shared_jobs = (not self.curve) if config.shared_jobs is None else config.shared_jobs
        self.limits = config.limits
        self.paths = PathPolicy(config.data_dir, config.allow_paths)
        self.store = JobStore(config.data_dir)
        self._outbox: queue.Queue[Message] = queue.Queue()
        self._stop = threading.Event()
        # Before the port opens: a gateway that cannot reach its cluster refuses to start with nothing bound.
        self._runner: JobRunner
        if config.ray is not None:
            from .ray_runner import RayRunner  # only `serve --ray` needs Ray installed

            self._runner = RayRunner(config.ray, self.store, self._emit, self._stop, self._announce_queue)
        else:
            threads = ThreadPolicy(config.threads, config.workers, config.reserve_cores)
            self._runner = ProcessRunner(config.workers, self.store, self._emit, self._stop, str(device),
                                         self._announce_queue, threads=threads)
        self.context = zmq.Context()
        self._auth = None
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        # ROUTER_HANDOVER stays off: a second connection with an id already in use is refused (see sessions).
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.context)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized))
            self.socket.curve_secretkey = keys.secret
            self.socket.curve_publickey = keys.public
            self.socket.curve_server = True
        self._monitor = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.socket.bind(zmq_endpoint(config.bind))
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bell = self.context.socket(zmq.PULL)
        self._bell_address = f"inproc://bell-{id(self)}"
        self._bell.bind(self._bell_address)
        self._bell_local = threading.local()
        self._bells: list[zmq.Socket] = []
        self._bells_lock = threading.Lock()

        #: job id -> (peer, request id) of each `delete` waiting for the running job to stop.
        self._deleting: dict[str, list[tuple[bytes, str | None]]] = {}
        #: Best-of-N jobs whose candidate is chosen (`chosen` went out): a pick for them is refused.
        self._chosen: set[str] = set()
        self.subscribers = Subscribers()
        self.sessions = Sessions(curve=self.curve)
        for record in self.store.load():
            self._runner.enqueue(record.job_id)

    # --- running --------------------------------------------------------------------

    def serve_forever(self) -> None:
        self._runner.start()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._bell, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        tick = max(0.01, min(1.0, self.config.heartbeat_interval / 4))
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(int(tick * 1000)))
                # Disconnects first: a session must end before a message on a reused id is read.
                self._read_monitor()
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
        self._runner.shutdown()
        with self._bells_lock:
            for bell in self._bells:
                bell.close(0)
        self._bell.close(0)
        self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        if self._auth is not None:
            self._auth.stop()
        self.context.term()

    # --- from the workers -------------------------------------------------------------

    def _emit(self, message: Message) -> None:
        """Called from the runner's threads: queue the message and wake the loop."""
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

    def _announce_queue(self) -> None:
        """Tell each waiting job's subscribers its place in line (1 runs next). Called whenever the line moves
        (a submit, a resume, a queued job cancelled, a worker taking the next job), from any thread."""
        position, seen = 0, set()
        for job_id in self._runner.waiting():
            if job_id in seen:
                continue
            seen.add(job_id)
            record = self.store.get(job_id)
            if record is None or record.state != QUEUED:
                continue  # cancelled while waiting: the worker will skip it
            position += 1
            if position > ANNOUNCED_POSITIONS:
                break
            self._emit(Progress(job_id=job_id, step=record.step, steps=record.spec.steps, elapsed=record.elapsed,
                                phase="queued", queue_position=position))

    def _send_outbox(self) -> None:
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._publish(message)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the loop
                _log(f"error publishing {message.TYPE}: {exc!r}")

    def _publish(self, message: Message) -> None:
        if isinstance(message, Finished):  # before anyone hears of it: a finished job's folder is final when told
            self.store.prune_checkpoints(self.limits.keep_checkpoints)
        for peer, out in self.subscribers.route(message):
            if isinstance(out, Finished):
                self._offer_finished(peer, out.job_id, None, out)
            else:
                self._send(peer, out)
        if isinstance(message, Chosen):
            self._chosen.add(message.job_id)
        if isinstance(message, ENDINGS):
            job_id = message.job_id  # type: ignore[attr-defined]
            self._chosen.discard(job_id)
            self._runner.forget(job_id)
            for peer, request_id in self._deleting.pop(job_id, []):
                self._send(peer, Deleted(job_id=job_id, freed_bytes=self.store.delete(job_id),
                                         request_id=request_id))

    # --- from the clients ---------------------------------------------------------------

    def _read_monitor(self) -> None:
        while self._monitor.poll(0):
            try:
                event = recv_monitor_message(self._monitor)
            except Exception:  # noqa: BLE001 - a monitor frame we cannot parse is not worth stopping for
                continue
            if event.get("event") == zmq.EVENT_DISCONNECTED:
                for peer in self.sessions.disconnected(int(event["value"])):
                    self.subscribers.forget(peer)

    def _read_messages(self) -> None:
        for _ in range(READ_BATCH):
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.handle_frames(frames)

    def handle_frames(self, frames: list) -> None:
        """Decode, check and answer one message (`frames`: routing id, then the protocol frames).

        Nothing escapes: a bad message gets `error` (or `rejected` for a bad spec), a bug gets `error` with code
        `internal` and one line in the log, and the loop goes on.
        """
        peer = bytes(getattr(frames[0], "bytes", frames[0]))
        request_id = None
        try:
            session, new = self.sessions.identify(peer, frames[-1])
            if new:
                self.subscribers.forget(peer)  # an earlier holder of this routing id: its subscriptions end here
            self._heard(peer)
            message = decode(frames[1:], accept=CLIENT_TYPES, max_message_bytes=self.config.max_message_bytes)
            request_id = message.request_id
            self._handle(peer, session, message)
        except BadJobSpec as exc:
            self._reply(peer, lambda e=exc: Rejected(reason=safe_text(e.spec_error, MAX_TEXT),
                                                     field=safe_text(e.spec_error.field, MAX_FIELD_NAME),
                                                     request_id=e.request_id))
        except ProtocolError as exc:
            self._reply(peer, lambda e=exc: Error.from_exception(e))
        except Exception as exc:  # noqa: BLE001 - a bug in handling one message must not stop the service
            _log(f"error handling a message: {safe_text(repr(exc), 500)}")
            self._reply(peer, lambda e=exc: Error(code="internal", reason=safe_text(f"{type(e).__name__}: {e}", 2000),
                                                  request_id=request_id))

    def _handle(self, peer: bytes, session: Session, message: Message) -> None:
        rid = message.request_id
        if isinstance(message, Hello):
            self._send(peer, Welcome(server=f"dreamfusion-backend {__version__}",
                                     heartbeat_interval=self.config.heartbeat_interval,
                                     max_message_bytes=self.config.max_message_bytes,
                                     job_slots=self._job_slots(), request_id=rid))
        elif isinstance(message, Heartbeat):
            pass  # being heard is all it is for
        elif isinstance(message, Submit):
            self._submit(peer, session, message)
        elif isinstance(message, Ack):
            self._ack(peer, message)
        elif isinstance(message, Bye):
            self.subscribers.forget(peer)
        elif isinstance(message, List):
            self._send(peer, ListReply(**self._page(session, message.offset, message.limit), request_id=rid))
        elif isinstance(message, Status):
            if message.job_id is None:
                self._send(peer, StatusReply(**self._page(session, message.offset, message.limit), request_id=rid))
            elif (entry := self._known(peer, session, message, any_state=True)) is not None:
                self._send(peer, StatusReply(jobs=[entry.info()], total=1, request_id=rid))
        elif isinstance(message, Watch):
            if (record := self._known(peer, session, message)) is not None:
                self._subscribe(peer, record.job_id)
                self._send(peer, StatusReply(jobs=[record.info()], total=1, request_id=rid))
        elif isinstance(message, Cancel):
            self._cancel(peer, session, message)
        elif isinstance(message, Pick):
            self._pick(peer, session, message)
        elif isinstance(message, Result):
            self._result(peer, session, message)
        elif isinstance(message, Resume):
            self._resume(peer, session, message)
        elif isinstance(message, Delete):
            self._delete(peer, session, message)
        else:  # a client type added to the protocol but not here: the peer hears so (an `internal` error)
            raise NotImplementedError(f"the server has no handler for {message.TYPE!r}")

    def _page(self, session: Session, offset: int, limit: int) -> dict:
        visible = [e for e in self.store.listing() if self._may_see(session, e.owner)]
        page = visible[offset:offset + limit]
        more = offset + len(page) < len(visible)
        return dict(jobs=[e.info(summary=True) for e in page], total=len(visible), offset=offset,
                    next_offset=offset + len(page) if more else None)

    def _submit(self, peer: bytes, session: Session, message: Submit) -> None:
        try:
            self._within_limits(session)
            admitted = admit(message.spec, self.store, self.paths,
                             lambda job_id: self._may_see(session, self.store.get(job_id).owner),
                             has_mesh=message.init_mesh is not None)
            _check_work(admitted.spec, message, self.limits)
        except Refused as refusal:
            self._send(peer, Rejected(reason=refusal.reason, field=refusal.field, request_id=message.request_id))
            return
        spec = admitted.spec
        record = self.store.create(spec, owner=session.principal, parent=admitted.parent,
                                   init_mesh=message.init_mesh,
                                   init_uvs=message.init_uvs.uvs if message.init_uvs is not None else None)
        self._subscribe(peer, record.job_id)
        self._send(peer, Accepted(job_id=record.job_id, spec=spec, request_id=message.request_id))
        self._runner.enqueue(record.job_id)
        self._announce_queue()

    def _job_slots(self) -> int:
        slots = self._runner.slots()
        if self.limits.max_queued_per_client:
            slots = min(slots, self.limits.max_queued_per_client)
        return max(1, min(slots, 1_000_000))

    def _within_limits(self, session: Session, new_job: bool = True) -> None:
        """Refused when a submit (`new_job`) or a resume would go past a server limit."""
        limits = self.limits
        if new_job and limits.max_jobs and (held := self.store.count()) >= limits.max_jobs:
            raise Refused(None, f"this backend holds {held} jobs, its limit (--max-jobs "
                                  f"{limits.max_jobs}); delete finished ones first (`dreamfusion-backend client "
                                  "delete JOB`, or Remove in Blender's job list)")
        if limits.max_disk and (used := self.store.disk_usage()) >= limits.max_disk:
            raise Refused(None, f"this backend's job folder holds {format_size(used)}, its quota (--max-disk "
                                  f"{format_size(limits.max_disk)}); delete finished jobs to free space")
        if limits.max_queued_per_client:
            if (mine := self.store.active_count(session.principal)) >= limits.max_queued_per_client:
                raise Refused(None, f"you have {mine} jobs queued or running, the most one client may have "
                                      f"(--max-queued-per-client {limits.max_queued_per_client}); wait for one to "
                                      "finish or cancel one")

    def _ack(self, peer: bytes, message: Ack) -> None:
        held = self.subscribers.ack(peer, message.job_id)
        if held is not None:
            self._send(peer, held)  # the credit goes straight to the newest held update
        following = self.subscribers.mesh_taken(peer, message.job_id)
        if following is not None:
            self._send_finished(peer, *following)

    def _cancel(self, peer: bytes, session: Session, message: Cancel) -> None:
        record = self._known(peer, session, message, act="cancel")
        if record is None:
            return
        if record.state in TERMINAL or record.state == INTERRUPTED:
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; there is nothing to cancel")
            return
        self._subscribe(peer, record.job_id)  # the one who cancels hears that it happened
        self._stop_job(record)

    def _pick(self, peer: bytes, session: Session, message: Pick) -> None:
        """The artist's pick of a best-of-N candidate: passed to the job, which takes it before its choice and says
        so in `chosen` (by "artist"). Refused for a job that trains no candidates, a candidate it does not have,
        and a job that has chosen already (its own `chosen` went out, or it carries on from a checkpoint, which
        only the chosen candidate has) or is no longer queued or running."""
        record = self._known(peer, session, message, act="pick a candidate of")
        if record is None:
            return
        count = record.spec.candidates
        if count < 2:
            self._refuse(peer, message, f"job {record.job_id} trains no candidates to pick from (candidates = "
                                        f"{count})")
        elif message.candidate >= count:
            self._send(peer, Rejected(reason=f"candidate = {message.candidate} is out of range; allowed: an integer "
                                             f"from 0 to {count - 1} (job {record.job_id} trains {count})",
                                      field="candidate", job_id=record.job_id, request_id=message.request_id))
        elif record.state not in ACTIVE:
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; a candidate is picked while it "
                                        "trains its candidates")
        elif record.job_id in self._chosen or self.store.checkpoints(record.job_id):
            self._refuse(peer, message, f"job {record.job_id} has chosen its candidate already; a pick must come "
                                        "before the choice")
        else:
            self._subscribe(peer, record.job_id)  # the one who picks hears the choice
            self._runner.pick(record.job_id, message.candidate)

    def _stop_job(self, record: JobRecord) -> bool:
        """Ask a queued or running job to stop; True when it was still queued (it is cancelled now)."""
        self._runner.cancel(record.job_id)
        # Not picked up yet: the worker will skip it, so answer at once. (Running: the worker answers.)
        if self.store.transition(record.job_id, (QUEUED,), CANCELLED, reason="cancelled by a client"):
            self._publish(Cancelled(job_id=record.job_id, step=record.step))
            self._announce_queue()
            return True
        return False

    def _result(self, peer: bytes, session: Session, message: Result) -> None:
        record = self._known(peer, session, message)
        if record is None:
            return
        if record.state != FINISHED or not self.store.mesh_path(record.job_id).is_file():
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; a result exists once it has "
                                        f"{FINISHED}")
            return
        self._offer_finished(peer, record.job_id, message.request_id)

    def _offer_finished(self, peer: bytes, job_id: str, request_id: str | None,
                        message: Finished | None = None) -> None:
        """Send a `finished` (with its mesh) when the client's mesh credit allows, else let it wait its turn."""
        verdict, superseded = self.subscribers.want_mesh(peer, job_id, request_id)
        if verdict is None:
            self._send(peer, Rejected(reason="too many result requests are waiting for this client to take the "
                                             "results already sent; read them (and ack each) first",
                                      field="job_id", job_id=job_id, request_id=request_id))
        elif verdict:
            self._send_finished(peer, job_id, request_id, message)
        elif superseded is not None:
            self._send(peer, Rejected(reason=f"superseded by the later result request {request_id} for job "
                                             f"{job_id}, which gets the mesh", field="job_id", job_id=job_id,
                                      request_id=superseded))

    def _send_finished(self, peer: bytes, job_id: str, request_id: str | None,
                       message: Finished | None = None) -> None:
        """Send the `finished` that holds the client's mesh credit; one that cannot go hands the credit on."""
        while True:
            message = message or self._finished_from_disk(job_id, request_id)
            if message is not None and self._send(peer, message):
                return
            if message is None and request_id is not None:
                self._send(peer, Rejected(reason=f"job {job_id} no longer has a result (it was deleted)",
                                          field="job_id", job_id=job_id, request_id=request_id))
            following = self.subscribers.mesh_taken(peer, job_id)
            if following is None:
                return
            (job_id, request_id), message = following, None

    def _finished_from_disk(self, job_id: str, request_id: str | None) -> Finished | None:
        record = self.store.get(job_id)
        mesh = self.store.load_mesh(job_id) if record is not None and record.state == FINISHED else None
        if mesh is None:
            return None
        checkpoints = self.store.checkpoints(job_id)
        try:
            texture = self.store.load_texture(job_id)
        except (OSError, ValueError, KeyError, ProtocolError):  # a damaged file: the mesh alone is still the result
            texture = None
        if texture is not None and len(texture.uvs) != 3 * mesh.triangle_count:
            texture = None  # not this mesh's (a damaged folder)
        return Finished(job_id=job_id, step=record.step, elapsed=record.elapsed,
                        checkpoint=str(checkpoints[0]) if checkpoints else "", files=record.files, mesh=mesh,
                        texture=texture, request_id=request_id)

    def _resume(self, peer: bytes, session: Session, message: Resume) -> None:
        record = self._known(peer, session, message, act="resume")
        if record is None:
            return
        if record.state not in RESUMABLE:
            self._refuse(peer, message, f"job {record.job_id} is {record.state}; only "
                                        f"{', '.join(RESUMABLE)} jobs can be resumed")
            return
        try:
            self._within_limits(session, new_job=False)
        except Refused as refusal:
            self._refuse(peer, message, refusal.reason)
            return
        self._runner.forget(record.job_id)
        if not self.store.transition(record.job_id, RESUMABLE, QUEUED, reason=""):
            return
        self._subscribe(peer, record.job_id)
        self._send(peer, Accepted(job_id=record.job_id, spec=record.spec, request_id=message.request_id))
        self._runner.enqueue(record.job_id)
        self._announce_queue()

    def _delete(self, peer: bytes, session: Session, message: Delete) -> None:
        entry = self._known(peer, session, message, act="delete", any_state=True)
        if entry is None:
            return
        if isinstance(entry, JobRecord) and entry.state in ACTIVE and not self._stop_job(entry):
            # Running: the worker stops it after its step; the folder goes when it has (see _publish).
            self._deleting.setdefault(entry.job_id, []).append((peer, message.request_id))
            return
        self._send(peer, Deleted(job_id=entry.job_id, freed_bytes=self.store.delete(entry.job_id),
                                 request_id=message.request_id))

    # --- helpers ----------------------------------------------------------------------------

    def _may_see(self, session: Session, owner: str) -> bool:
        return not owner or owner == session.principal or self.shared_jobs

    def _may_act(self, session: Session, owner: str) -> bool:
        # Shared loopback jobs are everyone's on this machine (a restarted Blender cancels what it started);
        # shared CURVE jobs may be watched by other keys, never stopped or deleted by them.
        return not owner or owner == session.principal or (self.shared_jobs and not self.curve)

    def _known(self, peer: bytes, session: Session, message: JobCommand | Status, act: str = "",
               any_state: bool = False) -> JobRecord | DamagedJob | None:
        """The job `message` names if this client may see it (and, with `act`, act on it); else refused.
        Another client's job it may not see is refused in the same words as no job at all."""
        job_id = message.job_id
        entry: JobRecord | DamagedJob | None = self.store.get(job_id)
        if entry is None and (damaged := self.store.damaged(job_id)) is not None:
            if not any_state:
                self._refuse(peer, message, f"job {job_id} is damaged ({damaged.problem}); it can only be deleted")
                return None
            entry = damaged
        if entry is None or not self._may_see(session, entry.owner):
            self._refuse(peer, message, f"no job {job_id!r} on this backend")
            return None
        if act and not self._may_act(session, entry.owner):
            self._refuse(peer, message, f"job {job_id} belongs to another client; only the client that submitted "
                                        f"it may {act} it")
            return None
        return entry

    def _refuse(self, peer: bytes, message: JobCommand | Status, reason: str) -> None:
        self._send(peer, Rejected(reason=reason, field="job_id", job_id=message.job_id,
                                  request_id=message.request_id))

    def _subscribe(self, peer: bytes, job_id: str) -> None:
        self.subscribers.subscribe(peer, job_id)

    def _heard(self, peer: bytes) -> None:
        self.subscribers.heard(peer, time.monotonic())

    def _reply(self, peer: bytes, build) -> None:
        """Send the reply `build()` makes; if making it fails, a fixed `error` instead (nothing escapes)."""
        try:
            reply = build()
        except Exception:  # noqa: BLE001
            reply = Error(code="protocol_error", reason=_LAST_RESORT)
        self._send(peer, reply)

    def _send(self, peer: bytes, message: Message) -> bool:
        """Send without blocking; False when it could not go (the client is not reading, or has gone)."""
        try:
            send_routed(self.socket, peer, message, flags=zmq.NOBLOCK,
                        max_message_bytes=self.config.max_message_bytes)
        except zmq.Again:  # the client's queue is full: it is not reading; what matters is resent or held
            return False
        except zmq.ZMQError:  # the peer went away between its message and our answer
            return False
        except ProtocolError as exc:  # a reply too big to encode: say so rather than say nothing
            if isinstance(message, Error):
                return False
            return self._send(peer, Error(code=exc.code, reason=safe_text(f"cannot send {message.TYPE}: {exc}",
                                                                         2000), request_id=message.request_id))
        self.subscribers.sent(peer, time.monotonic())
        return True

    def _heartbeats(self) -> None:
        if self.config.heartbeat_interval <= 0:
            return
        for peer in self.subscribers.check_liveness(time.monotonic(), self.config.heartbeat_interval):
            self._send(peer, Heartbeat(time=time.time()))


def _log(line: str) -> None:
    print(f"dreamfusion-backend serve: {line}", file=sys.stderr, flush=True)


def _check_work(spec, message: Submit, limits) -> None:
    """Refused when fitting the submit's start mesh or baking into its UVs would cost more than the limits allow
    (backend/work_budget.py): decided here, in well under a second, rather than hours into the job."""
    budget = WorkBudget(max_fit_work=limits.max_fit_work, max_bake_texels=limits.max_bake_texels)
    uvs = message.init_uvs.uvs if message.init_uvs is not None else None
    try:
        check_work(spec, message.init_mesh, uvs, budget)
    except OverBudget as exc:
        raise Refused(exc.field, exc.reason) from None
