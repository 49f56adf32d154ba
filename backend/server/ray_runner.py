"""`serve --ray`: the server becomes a gateway and each job trains in its own Ray actor on any node with room.

The ZeroMQ front door, the job store and the subscriptions stay in the gateway process; only the training
moves. A job's actor reserves `RayOptions.actor_options()` (one GPU by default), so Ray, not this code, holds
queued jobs until a node has room and places each where it fits. Ray places pending actors in no set order, so
jobs start first come, first served by passing actors forward: an actor placed (or freed warm) while a job queued
earlier still waits goes to that job, and the later one waits on with a new actor. (Every job asks for the same
resources, so any placed actor suits any job.)

Streaming: the actor's `run` is a Ray streaming generator. Each report (a message in the wire format, a
record change, a mesh, a checkpoint, a file) reaches the gateway in order as soon as it is made, through
Ray's own transport, with back-pressure (a gateway that falls behind pauses the job instead of filling the
object store), and the end of the stream or the actor's death is an exception in the same loop, so there is
no second channel to keep in step. (Pushing to the gateway over ZeroMQ would need every node to reach the
gateway's port and a second authentication; a Ray queue actor is one more process to lose.) The gateway
applies the reports to its own store, so the job's checkpoints are where every node can reach them: in the
gateway's folder, handed to whichever actor runs the job next.

A node lost mid-job (its actor dies) puts the job back in Ray's queue with the last checkpoint the gateway
holds, so it loses at most one checkpoint interval, up to `max_attempts` runs; a gateway stopping asks every
actor to stop after its step (`interrupted`, resumable as on a plain server).

Each job is one coroutine on one asyncio loop in one thread, however many are queued; the store's writes run
in a small thread pool. `cancel` and `shutdown` come from the service's thread and only signal or kill actors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from blender_dreamfusion.shared import Cancelled, Failed, Message, Progress, __version__
from blender_dreamfusion.shared.states import ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING

from .jobs import JobStore
from .node_reports import apply_report
from .job_host import job_payload
from .ray_job import JobActor

#: Seconds a stopping gateway waits for its running jobs to save a checkpoint and say `interrupted`.
STOP_GRACE = 30.0
#: Reports a job may have in flight before its actor waits for the gateway to catch up.
BACKPRESSURE = 16
_START_A_CLUSTER = ("Start one with `ray start --head` (and `ray start --address=HEAD:6379` on each GPU node), or "
                    "use --ray local")


class RayError(RuntimeError):
    """Ray is missing, or the cluster cannot be reached: said once at start, before the port opens."""


@dataclass(frozen=True)
class RayOptions:
    #: The cluster: "auto" (the one `ray start` runs on this machine, or RAY_ADDRESS), "HOST:PORT",
    #: "ray://HOST:PORT", or "local" (start a one-machine Ray inside the gateway).
    address: str = "auto"
    #: What each job's actor reserves. GPUs may be fractional; CPU-only nodes take jobs with num_gpus = 0.
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    #: Custom resources each job asks for as well (e.g. {"a100": 1} for nodes started with that resource).
    resources: dict[str, float] = field(default_factory=dict)
    #: How many times a job may start (its node lost each time but the last) before it fails.
    max_attempts: int = 3
    #: The torch device each node trains on ("auto": its GPU if Ray gave it one, else its CPU).
    device: str = "auto"
    #: Hand a finished job's actor (its GPU, its loaded prior) to the next job in line instead of a new process.
    reuse_actors: bool = True

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus,
                                   "max_concurrency": 3, "max_restarts": 0}
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


@dataclass
class _Job:
    actor: Any = None
    started: bool = False
    cancel: bool = False
    #: Best of N: the artist's pick (its run's payload carries it, and a running actor is told).
    pick: int | None = None
    #: Queued again (resumed) while its last run was still winding down: run it once more.
    again: bool = False
    node: str = ""
    #: This run's token: the actor ignores cancels of other runs (a warm actor runs several jobs).
    run: str = ""
    #: While it waits for a node: where another job may pass it an actor on a node, (actor, node, version, warm):
    #: a warm one from a job that ended, or one Ray placed for a job queued later (loop thread only).
    offer: "asyncio.Future | None" = None


class RayRunner:
    def __init__(self, options: RayOptions, store: JobStore, emit: Callable[[Message], None],
                 stopping: threading.Event, on_started: Callable[[], None]):
        try:
            import ray
        except ImportError:
            raise RayError("serve --ray needs Ray: pip install 'blender-dreamfusion[ray]' on the gateway and on "
                           "every node") from None
        self.ray, self.options = ray, options
        self.store, self.emit, self.stopping, self.on_started = store, emit, stopping, on_started
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _check_reachable(options.address)
            try:
                ray.init(address=None if options.address == "local" else options.address,
                         namespace="dreamfusion", logging_level="WARNING", configure_logging=True)
            except Exception as exc:  # ConnectionError, ValueError: no cluster there
                raise RayError(f"cannot reach a Ray cluster at {options.address!r}: {str(exc).rstrip('.')}. "
                               f"{_START_A_CLUSTER}") from None
        self._actor_class = ray.remote(JobActor).options(**options.actor_options())
        self._jobs: dict[str, _Job] = {}  # insertion order: the order jobs were queued
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._files = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ray-store")
        self._thread = threading.Thread(target=self._loop.run_forever, name="ray-gateway", daemon=True)
        self._tasks: set[concurrent.futures.Future] = set()
        self._pending: list[str] = []
        self._running = False
        #: Diagnostics (tests, logs): actors Ray placed for a job, warm actors handed from job to job, and the
        #: latest jobs in the order they got a node.
        self.placements = 0
        self.handoffs = 0
        self.start_order: deque[str] = deque(maxlen=256)

    # --- the runner surface the service uses ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        with self._lock:
            self._running, pending, self._pending = True, self._pending, []
        for job_id in pending:
            self._launch(job_id)

    def enqueue(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id].again = True  # its coroutine runs it again once the current run has ended
                return
            self._jobs[job_id] = _Job()
            if not self._running:
                self._pending.append(job_id)
                return
        self._launch(job_id)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.cancel = True
            actor, started, run = job.actor, job.started, job.run
        if actor is None:
            return  # its coroutine sees the flag before it makes one
        try:
            if started:
                actor.cancel.remote(run)  # the job stops after its step and says `cancelled`
            else:
                self.ray.kill(actor)  # still waiting for a node: leave Ray's queue now
        except Exception as exc:  # noqa: BLE001 - Ray unreachable: the job's coroutine settles it when Ray says
            _log(f"job {job_id}: could not reach its actor to cancel it: {_first_line(exc)}")

    def pick(self, job_id: str, candidate: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.pick = candidate
            actor, run = job.actor, job.run
        if actor is None:
            return  # its run's payload carries it
        try:
            actor.pick.remote(run, candidate)  # kept by the actor for that run, if the run has not begun
        except Exception as exc:  # noqa: BLE001 - Ray unreachable: the judge chooses instead
            _log(f"job {job_id}: could not reach its actor with the artist's pick: {_first_line(exc)}")

    def forget(self, job_id: str) -> None:
        pass  # a job's entry goes when its coroutine ends; a resume before that is refused by its state

    def waiting(self) -> list[str]:
        with self._lock:
            return [job_id for job_id, job in self._jobs.items() if not job.started and not job.cancel]

    def slots(self) -> int:
        return 1_000_000  # Ray queues them: a client may hand over everything it has (limits still apply)

    def shutdown(self) -> None:
        """Running jobs stop after their step and end `interrupted` (with their checkpoint); queued ones stay
        queued for the next start. A job that does not answer within STOP_GRACE is interrupted here."""
        with self._lock:
            actors = [(job.actor, job.started) for job in self._jobs.values() if job.actor is not None]
        for actor, started in actors:
            try:
                if started:
                    actor.stop.remote()
                else:
                    self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - Ray unreachable: nothing of it is left to stop
                pass
        deadline = time.monotonic() + STOP_GRACE
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            try:
                task.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - timed out or failed: the record is settled below
                pass
        with self._lock:
            jobs = [(job_id, job.actor) for job_id, job in self._jobs.items()]
        for job_id, actor in jobs:
            if actor is not None:
                self._kill(actor)
            self.store.transition(job_id, (RUNNING,), INTERRUPTED,
                                  reason="the gateway stopped while this job was running; resume it to continue")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._files.shutdown(wait=True)
        if self._owns_ray:
            self.ray.shutdown()

    # --- one job ----------------------------------------------------------------------------------

    def _launch(self, job_id: str) -> None:
        task = asyncio.run_coroutine_threadsafe(self._follow(job_id), self._loop)
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: concurrent.futures.Future) -> None:
        with self._lock:
            self._tasks.discard(task)

    async def _follow(self, job_id: str) -> None:
        """Run the job until it ends, on a new actor each time its node is lost; again if it was queued anew
        (resumed) while this ran out."""
        job = self._jobs[job_id]
        try:
            while True:
                for attempt in range(1, self.options.max_attempts + 1):
                    lost = await self._attempt(job_id, job)
                    if lost is None or not self._after_loss(job_id, job, lost, attempt):
                        break
                with self._lock:
                    if not job.again or self.stopping.is_set():
                        self._jobs.pop(job_id, None)
                        return
                    job.again, job.cancel, job.started = False, False, False
        except Exception as exc:  # noqa: BLE001 - a bug here must end the job, not leave it running forever
            traceback.print_exc()
            with self._lock:
                self._jobs.pop(job_id, None)
            self._fail(job_id, f"internal error on the gateway: {type(exc).__name__}: {exc}")

    async def _attempt(self, job_id: str, job: _Job) -> BaseException | None:
        """One actor's run; returns the error if its actor died or its node was lost (None: the job ended, or
        never started)."""
        record = self.store.get(job_id)
        if record is None or record.state != QUEUED or self.stopping.is_set():
            return None
        if job.cancel:  # asked to stop between two runs (a cancel while it was being queued again)
            if self.store.transition(job_id, (QUEUED,), CANCELLED, reason="cancelled by a client"):
                self.emit(Cancelled(job_id=job_id, step=record.step))
            return None
        # Not awaited: from here until the job waits for a node nothing yields, so jobs take their places in line
        # (their offers, see _placed) in the order they were queued.
        self._loop.run_in_executor(self._files, self._note_if_infeasible, job_id)
        actor = self._actor_class.remote()
        with self._lock:
            job.actor, job.started, job.run = actor, False, uuid.uuid4().hex
            cancelled = job.cancel
        if cancelled:  # asked to stop in the moment the actor was made: the next turn says `cancelled`
            self._kill(actor)
            with self._lock:
                job.actor = None
            return await self._attempt(job_id, job)
        handed_on = False
        try:
            # Placed: Ray found a node with room, or a job that ended handed this one its warm actor. Only now
            # are the job's files read and sent, so a long queue holds no payloads and a resumed job starts from
            # the newest checkpoint the gateway has.
            actor, node, version = await self._placed(job, actor)
            self.start_order.append(job_id)
            await self._loop.run_in_executor(self._files, self._started, job_id, job, node, version)
            payload = await self._loop.run_in_executor(self._files, self._payload, job_id)
            payload["run"] = job.run
            with self._lock:
                payload["pick"] = job.pick
            stream = actor.run.options(num_returns="streaming",
                                       _generator_backpressure_num_objects=BACKPRESSURE).remote(payload)
            async for ref in stream:
                report = await ref
                await self._loop.run_in_executor(self._files, self._apply, job_id, report)
            # Only an actor whose job ended well runs the next one: a failed job may have left its process or
            # GPU broken (a CUDA error), and would fail the whole line in turn.
            ended = self.store.get(job_id)
            if ended is not None and ended.state in (FINISHED, CANCELLED):
                handed_on = self._hand_on(actor, node)
        except self.ray.exceptions.RayTaskError as exc:  # the actor's code raised outside the job's own guard
            self._fail(job_id, f"the node's job actor failed: {exc.cause if exc.cause is not None else exc}")
        except self.ray.exceptions.RayError as exc:  # the actor died, its node went, or a report was lost with it
            return exc
        except ValueError as exc:  # a report the gateway will not take
            self._fail(job_id, f"the job's node sent a report the gateway refuses: {exc}")
        except _Abandoned:
            pass
        finally:
            with self._lock:
                current, job.actor = job.actor, None  # the actor this job holds now (it may have passed one on)
            if not handed_on and current is not None:
                self._kill(current)
        record = self.store.get(job_id)
        if record is not None and record.state == RUNNING:  # the stream ended without the job's end
            self._fail(job_id, "the job's actor ended without finishing the job")
        return None

    async def _placed(self, job: _Job, actor) -> tuple[Any, str, str]:
        """Wait until the job has an actor on a node: its own, once Ray places it, or one a job passes on (a warm
        one from a job that ended, or one Ray placed for a job queued after this one); then its own pending actor
        leaves Ray's queue. An actor Ray places for this job while one queued earlier still waits goes to that
        one, and this job waits on with a new actor. Returns (actor, node, version)."""
        while True:
            offer = job.offer = self._loop.create_future()
            ready = asyncio.ensure_future(self._ready(actor))
            try:
                await asyncio.wait({ready, offer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                job.offer = None
            if not ready.done():  # an actor was passed on first
                ready.cancel()
                self._kill(actor)
                given, node, version, warm = offer.result()
                with self._lock:
                    cancelled = job.cancel
                    if not cancelled:
                        job.actor = given
                if cancelled:  # cancelled meanwhile (the service answers it): pass the actor on to the next job
                    if not self._hand_on(given, node, version, warm):
                        self._kill(given)
                    raise _Abandoned
                self.handoffs += warm
                return given, node, version
            if offer.done():  # both at once: keep the placed one, and pass the other on to the next job in line
                given, given_node, given_version, warm = offer.result()
                if not self._hand_on(given, given_node, given_version, warm):
                    self._kill(given)
            node, version = ready.result()  # raises if the pending actor died (killed by a cancel, or its node)
            self.placements += 1
            if not self._hand_on(actor, node, version, warm=False, giver=job):
                return actor, node, version
            # A job queued before this one took the actor: wait on, at the back of Ray's queue, with a new one.
            actor = self._actor_class.remote()
            with self._lock:
                job.actor = actor
                abandoned = job.cancel or self.stopping.is_set()
            if abandoned:  # cancelled (the service answered it) or the gateway stops: it stays as it is
                raise _Abandoned

    async def _ready(self, actor) -> tuple[str, str]:
        return await actor.ready.remote()

    def _hand_on(self, actor, node: str, version: str = __version__, warm: bool = True,
                 giver: _Job | None = None) -> bool:
        """Give an actor on a node (its GPU reserved, its prior loaded if a job ended on it) to the first job in
        line that waits for a node, so the next job starts warm (unless actors are not reused); with `giver` (a
        waiting job whose own actor Ray placed), only to a job queued before it. False when none waits (the caller
        keeps or frees the actor)."""
        if self.stopping.is_set() or (warm and not self.options.reuse_actors):
            return False
        with self._lock:
            for job in self._jobs.values():
                if job is giver:
                    return False
                if job.offer is not None and not job.offer.done() and not job.cancel and not job.started:
                    job.offer.set_result((actor, node, version, warm))
                    if giver is not None:
                        giver.actor = None  # no longer the giver's: a cancel of it must not kill this actor
                    return True
        return False

    def _started(self, job_id: str, job: _Job, node: str, version: str) -> None:
        """The job's actor is placed on `node`: the job is running there (or abandoned, if it stopped meanwhile)."""
        if version != __version__:
            self._fail(job_id, f"node {node} runs blender-dreamfusion {version}, the gateway {__version__}; "
                               "install the same version on every node")
            raise _Abandoned
        node = str(node)[:200]
        if self.stopping.is_set():
            raise _Abandoned  # the gateway is stopping: the job stays queued for its next start
        if self.store.transition(job_id, (QUEUED,), RUNNING, reason="", node=node) is None:
            raise _Abandoned  # cancelled (or deleted) in the moment it was placed
        with self._lock:
            job.node, job.started = node, True
        self.on_started()

    def _note_if_infeasible(self, job_id: str) -> None:
        """Say in the job's reason when no node of the cluster could ever take it (it waits for one to join)."""
        try:
            total = self.ray.cluster_resources()
        except Exception:  # noqa: BLE001 - only a hint
            return
        asked = {"GPU": self.options.num_gpus, "CPU": self.options.num_cpus, **self.options.resources}
        missing = [f"{amount:g} {name}" for name, amount in asked.items() if amount > total.get(name, 0.0)]
        if missing:
            self.store.transition(job_id, (QUEUED,), QUEUED,
                                  reason=f"waiting: no node of the Ray cluster offers {', '.join(missing)} (the job "
                                         "starts when one joins; see --ray-gpus, --ray-resource)")

    def _after_loss(self, job_id: str, job: _Job, lost: BaseException, attempt: int) -> bool:
        """The job's actor died (its node was lost, or the process crashed): queue it again if it may run on.
        Returns whether to start another attempt."""
        record = self.store.get(job_id)
        if record is None:
            return False
        if job.cancel:
            if self.store.transition(job_id, ACTIVE, CANCELLED, reason="cancelled by a client"):
                self.emit(Cancelled(job_id=job_id, step=record.step))
            return False
        where = f"node {job.node}" if job.node else "its node"
        if self.stopping.is_set():
            self.store.transition(job_id, (RUNNING,), INTERRUPTED,
                                  reason="the gateway stopped while this job was running; resume it to continue")
            return False
        if record.state not in ACTIVE:
            return False
        if attempt >= self.options.max_attempts:
            self._fail(job_id, f"{where} was lost {attempt} times while running this job (last: "
                               f"{_first_line(lost)}); resume it to try again")
            return False
        reason = (f"{where} was lost at step {record.step}; queued again, resuming on another node from its "
                  f"checkpoint at step {record.step}" if self.store.checkpoints(job_id) else
                  f"{where} was lost before its first checkpoint; queued again from the start")
        _log(f"job {job_id}: {reason}")
        with self._lock:
            job.started = False
        # A cancel from here on either finds the job queued (the service answers it) or leaves its flag for the
        # next attempt, which answers it: never both, never neither.
        if self.store.transition(job_id, ACTIVE, QUEUED, reason=reason) is None:
            return False  # ended meanwhile
        self.emit(Progress(job_id=job_id, step=record.step, steps=record.spec.steps, elapsed=record.elapsed,
                           phase="queued"))
        self.on_started()  # the line changed: tell the waiting jobs their places
        return True

    def _payload(self, job_id: str) -> dict[str, Any]:
        return job_payload(self.store, job_id, self.options.device)

    def _apply(self, job_id: str, report: tuple) -> None:
        """One report of the job's node, applied to the gateway's store or sent to its clients (checked first:
        `node_reports.apply_report` raises ValueError for anything a node may not do)."""
        message = apply_report(self.store, job_id, report)
        if message is not None:
            self.emit(message)

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone, or Ray unreachable: nothing left to free here
            pass

    def _fail(self, job_id: str, reason: str) -> None:
        """End a job that has not ended as `failed` (a job that finished or was cancelled meanwhile stays so)."""
        line = " ".join(reason.split())[:2000]
        if self.store.transition(job_id, ACTIVE, FAILED, reason=line) is not None:
            self.emit(Failed(job_id=job_id, reason=line))


class _Abandoned(Exception):
    """Stop following this actor: the job is no longer its (cancelled before it started, or refused)."""


def _check_reachable(address: str) -> None:
    """Refuse a HEAD:PORT nothing answers on at once: Ray itself would retry for minutes before it gave up."""
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except OSError as exc:
        raise RayError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}. {_START_A_CLUSTER}") \
            from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _log(line: str) -> None:
    print(f"dreamfusion-backend serve: {line}", file=sys.stderr, flush=True)
