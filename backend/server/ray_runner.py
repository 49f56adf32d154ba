"""`serve --ray`: the server becomes a gateway and each job trains in its own Ray actor on any node with room.

The ZeroMQ front door, the job store and the subscriptions stay in the gateway process; only the training
moves. A job's actor reserves `RayOptions.resources()` (one GPU by default), so Ray, not this code, holds
queued jobs until a node has room and places each where it fits.

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

Every Ray call here runs on one asyncio loop in one thread: one coroutine per job, however many are queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from blender_dreamfusion.shared import (SERVER_TYPES, Cancelled, Failed, Message, MeshData, Progress, Texture,
                                        __version__)
from blender_dreamfusion.shared.framing import decode

from .jobs import JobStore
from .ray_job import CHECKPOINT, FILE, MESH, MESSAGE, PAYLOAD_FILES, TEXTURE, UPDATE, JobActor

#: Seconds a stopping gateway waits for its running jobs to save a checkpoint and say `interrupted`.
STOP_GRACE = 30.0
#: Reports a job may have in flight before its actor waits for the gateway to catch up.
BACKPRESSURE = 16
_START_A_CLUSTER = ("Start one with `ray start --head` (and `ray start --address=HEAD:6379` on each GPU node), or "
                    "use --ray local")
#: Record fields a node may change (its reports are applied to the gateway's store).
_NODE_FIELDS = frozenset({"state", "step", "loss", "elapsed", "reason", "files"})


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
    #: Queued again (resumed) while its last run was still winding down: run it once more.
    again: bool = False
    node: str = ""


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
            actor, started = job.actor, job.started
        if actor is None:
            return  # its coroutine sees the flag before it makes one
        if started:
            actor.cancel.remote()  # the job stops after its step and says `cancelled`
        else:
            self.ray.kill(actor)  # still waiting for a node: leave Ray's queue now

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
            jobs = list(self._jobs.items())
        for _, job in jobs:
            if job.actor is not None and job.started:
                job.actor.stop.remote()
            elif job.actor is not None:
                self.ray.kill(job.actor)
        deadline = time.monotonic() + STOP_GRACE
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            try:
                task.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - timed out or failed: the record is settled below
                pass
        with self._lock:
            jobs = list(self._jobs.items())
        for job_id, job in jobs:
            if job.actor is not None:
                self.ray.kill(job.actor)
            self.store.transition(job_id, ("running",), "interrupted",
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
            with self._lock:
                self._jobs.pop(job_id, None)
            self._fail(job_id, f"internal error on the gateway: {type(exc).__name__}: {exc}")

    async def _attempt(self, job_id: str, job: _Job) -> BaseException | None:
        """One actor's run; returns the error if its actor died (None: the job ended, or never started)."""
        record = self.store.get(job_id)
        if record is None or record.state != "queued" or job.cancel or self.stopping.is_set():
            return None
        self._note_if_infeasible(job_id)
        actor = self._actor_class.remote()
        with self._lock:
            job.actor, job.started = actor, False
            cancelled = job.cancel
        if cancelled:  # asked to stop in the moment the actor was made
            self.ray.kill(actor)
            return None
        try:
            # Placed: Ray found a node with room. Only now are the job's files read and sent, so a long queue
            # holds no payloads and a resumed job starts from the newest checkpoint the gateway has.
            node, version = await actor.ready.remote()
            await self._loop.run_in_executor(self._files, self._started, job_id, job, node, version)
            payload = await self._loop.run_in_executor(self._files, self._payload, job_id)
            stream = actor.run.options(num_returns="streaming",
                                       _generator_backpressure_num_objects=BACKPRESSURE).remote(payload)
            async for ref in stream:
                report = await ref
                await self._loop.run_in_executor(self._files, self._apply, job_id, report)
        except self.ray.exceptions.RayActorError as exc:
            return exc
        except self.ray.exceptions.RayTaskError as exc:  # the actor's code raised outside the job's own guard
            self._fail(job_id, f"the node's job actor failed: {exc.cause if exc.cause is not None else exc}")
        except _Abandoned:
            pass
        finally:
            self.ray.kill(actor)
            with self._lock:
                job.actor = None
        record = self.store.get(job_id)
        if record is not None and record.state == "running":  # the stream ended without the job's end
            self._fail(job_id, "the job's actor ended without finishing the job")
        return None

    def _started(self, job_id: str, job: _Job, node: str, version: str) -> None:
        """The job's actor is placed on `node`: the job is running there (or abandoned, if it stopped meanwhile)."""
        if version != __version__:
            self._fail(job_id, f"node {node} runs blender-dreamfusion {version}, the gateway {__version__}; "
                               "install the same version on every node")
            raise _Abandoned
        node = str(node)[:200]
        if self.store.transition(job_id, ("queued",), "running", reason="", node=node) is None:
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
            self.store.update(job_id, reason=f"waiting: no node of the Ray cluster offers {', '.join(missing)} "
                                             "(the job starts when one joins; see --ray-gpus, --ray-resource)")

    def _after_loss(self, job_id: str, job: _Job, lost: BaseException, attempt: int) -> bool:
        """The job's actor died (its node was lost, or the process crashed): queue it again if it may run on.
        Returns whether to start another attempt."""
        record = self.store.get(job_id)
        if record is None:
            return False
        if job.cancel:
            if self.store.transition(job_id, ("running",), "cancelled", reason="cancelled by a client"):
                self.emit(Cancelled(job_id=job_id, step=record.step))
            return False
        where = f"node {job.node}" if job.node else "its node"
        if self.stopping.is_set():
            self.store.transition(job_id, ("running",), "interrupted",
                                  reason="the gateway stopped while this job was running; resume it to continue")
            return False
        if record.state not in ("running", "queued"):
            return False
        if attempt >= self.options.max_attempts:
            self._fail(job_id, f"{where} was lost {attempt} times while running this job (last: "
                               f"{_first_line(lost)}); resume it to try again")
            return False
        reason = (f"{where} was lost at step {record.step}; queued again, resuming on another node from its "
                  f"checkpoint at step {record.step}" if self.store.checkpoints(job_id) else
                  f"{where} was lost before its first checkpoint; queued again from the start")
        _log(f"job {job_id}: {reason}")
        self.store.update(job_id, state="queued", reason=reason)
        with self._lock:
            job.started = False
        self.emit(Progress(job_id=job_id, step=record.step, steps=record.spec.steps, elapsed=record.elapsed,
                           phase="queued"))
        self.on_started()  # the line changed: tell the waiting jobs their places
        return True

    def _payload(self, job_id: str) -> dict[str, Any]:
        """What a node needs to run the job: its record, its checkpoints and start mesh, and any start file the
        spec names on the gateway (a node cannot read the gateway's disk)."""
        record = self.store.get(job_id)
        folder = self.store.folder(job_id)
        files = {name: (folder / name).read_bytes() for name in PAYLOAD_FILES if (folder / name).is_file()}
        init_from = None
        if record.spec.init in ("checkpoint", "mesh") and record.spec.init_from and \
                not any(name.startswith("checkpoint") for name in files):
            path = Path(record.spec.init_from)
            init_from = ("".join(path.suffixes[-1:]), path.read_bytes())
        return {"record": record.to_json(), "home": str(folder), "files": files, "init_from": init_from,
                "device": self.options.device}

    def _apply(self, job_id: str, report: tuple) -> None:
        """One report of the job's node, applied to the gateway's store or sent to its clients."""
        kind = report[0]
        if kind == MESSAGE:
            self.emit(decode(report[1], accept=SERVER_TYPES))
        elif kind == UPDATE:
            _, changes, persist = report
            unknown = set(changes) - _NODE_FIELDS
            if unknown:
                raise ValueError(f"a node may not change {sorted(unknown)}")
            self.store.update(job_id, persist=persist, **changes)
        elif kind == MESH:
            self.store.save_mesh(job_id, MeshData(*report[1:]))
        elif kind == TEXTURE:
            self.store.save_texture(job_id, Texture(*report[1:]))
        elif kind == CHECKPOINT:
            self.store.put_checkpoint(job_id, report[1])
        elif kind == FILE:
            self.store.put_file(job_id, report[1], report[2])
        else:
            raise ValueError(f"unknown report {kind!r} from the job's node")

    def _fail(self, job_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:2000]
        if self.store.get(job_id) is None:
            return
        self.store.update(job_id, state="failed", reason=line)
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
