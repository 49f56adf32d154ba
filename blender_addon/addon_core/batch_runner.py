"""Runs a batch of JobSpecs on one or more backends until the list is done.

Each backend gets as many jobs at once as its `welcome.job_slots` says it
can use: one for a plain single-worker server, everything for a Ray gateway
(whose cluster queues them and keeps every GPU busy).

Pure Python over add-on sessions (anything with `tick`, `submit`, `cancel`,
`status` and a `tracker`): the Blender layer supplies `on_result`, which
puts the final mesh into the scene and writes the files, and
`load_init_mesh`, which reads a row's start mesh just before its submit (so
a batch of 50 assets holds one in memory at a time). `step()` never
blocks; `wait()` sleeps until a backend has something to say.

A backend that dies or stays silent is retired; the jobs it had go back to
the queue once (another backend may finish them), so a batch with several
backends survives losing all but one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..shared.jobspec import JobSpec
from ..shared.mesh import MeshData
from ..shared.states import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, TERMINAL
from .batch_plan import BatchItem
from .job_tracker import Applied, JobTracker, MeshToApply

#: A backend that has not answered its first hello by then is retired.
CONNECT_TIMEOUT = 30.0
#: A backend silent this long after the session noticed (three missed heartbeats) is retired; its job goes elsewhere.
LOST_TIMEOUT = 30.0
#: How often a job may be tried on another backend after its backend was lost.
RETRIES = 1
#: Jobs in flight per backend at most, whatever its `job_slots`: a gateway takes them all, but a batch of
#: thousands sent in one go would overflow the socket's send queue.
MAX_IN_FLIGHT = 64


class Session(Protocol):
    tracker: JobTracker

    def tick(self) -> Applied | None: ...
    def submit(self, spec: JobSpec, scene_name: str = "", init_mesh: MeshData | None = None) -> str: ...
    def cancel(self, job_id: str) -> None: ...
    def status(self) -> Any: ...
    def shutdown(self) -> None: ...
    #: Jobs the backend can usefully take at once (its welcome's `job_slots`; 1 until it has said).
    def job_slots(self) -> int: ...


@dataclass
class ItemResult:
    item: BatchItem
    status: str = "pending"   # pending, submitted, queued, running, finished, failed, cancelled, not started
    backend: str = ""
    job_id: str = ""
    request_id: str = ""
    started: float | None = None
    seconds: float | None = None
    step: int = 0
    attempts: int = 0
    files: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == FINISHED

    def to_dict(self) -> dict[str, Any]:
        spec = self.item.spec
        return {"line": self.item.line, "prompt": spec.prompt, "slug": self.item.slug, "job_id": self.job_id or None,
                "init_mesh": self.item.init_mesh or None,
                "backend": self.backend or None, "model": spec.model, "seed": spec.seed, "steps": spec.steps,
                "step": self.step, "seconds": None if self.seconds is None else round(self.seconds, 2),
                "status": self.status, "attempts": self.attempts, "files": dict(self.files),
                "error": self.error or None, "spec": spec.to_dict()}


@dataclass
class _Backend:
    name: str
    session: Session
    since: float = field(default_factory=time.monotonic)
    #: Its jobs that have not ended, in the order they were submitted.
    jobs: list[ItemResult] = field(default_factory=list)
    retired: str = ""
    silent_since: float | None = None


class BatchRunner:
    def __init__(self, items: list[BatchItem], sessions: dict[str, Session],
                 on_result: Callable[[ItemResult, MeshToApply], None],
                 log: Callable[[str], None] = print, progress_every: float = 10.0,
                 on_change: Callable[[ItemResult], None] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, lost_timeout: float = LOST_TIMEOUT,
                 load_init_mesh: Callable[[BatchItem], MeshData] | None = None):
        self.results = [ItemResult(item) for item in items]
        self.load_init_mesh = load_init_mesh
        self.queue = list(self.results)
        self.backends = [_Backend(name, session) for name, session in sessions.items()]
        self.on_result, self.log, self.on_change = on_result, log, on_change
        self.progress_every = progress_every
        self.connect_timeout, self.lost_timeout = connect_timeout, lost_timeout
        self._last_progress = time.monotonic()
        self._cancelling = False
        self.total = len(items)

    # --- the loop -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return all(r.status in (*TERMINAL, "not started") for r in self.results)

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Until every item ended; False if `should_stop` interrupted it (running jobs are then cancelled)."""
        while not self.done:
            if should_stop():
                self.cancel_all()
                return False
            self.step()
            self.wait(0.2)
        return True

    def step(self) -> None:
        now = time.monotonic()
        for backend in self.backends:
            if backend.retired:
                continue
            applied = backend.session.tick()
            if applied is not None:
                self._apply(backend, applied)
            state = self._check_health(backend, now)
            while (not backend.retired and self.queue and state == "connected"
                   and len(backend.jobs) < max(1, min(MAX_IN_FLIGHT, backend.session.job_slots()))):
                self._submit(backend, self.queue.pop(0))
        if self.queue and all(b.retired for b in self.backends):
            reasons = "; ".join(f"{b.name}: {b.retired}" for b in self.backends)
            for result in self.queue:
                self._end(result, FAILED, f"no backend left ({reasons})")
            self.queue.clear()
        if now - self._last_progress >= self.progress_every:
            self._last_progress = now
            for backend in self.backends:
                for result in backend.jobs:
                    if result.status == RUNNING:
                        self._progress_line(backend, result)

    def wait(self, seconds: float) -> None:
        """Sleep until a backend sends something (or `seconds` pass)."""
        import zmq

        poller = zmq.Poller()
        for backend in self.backends:
            client = getattr(backend.session, "client", None)
            if not backend.retired and client is not None:
                poller.register(client.socket, zmq.POLLIN)
        if poller.sockets:
            poller.poll(int(seconds * 1000))
        else:
            time.sleep(seconds)

    def cancel_all(self, timeout: float = 10.0) -> None:
        """Cancel every running job and wait (up to `timeout`) for the backends to confirm; nothing new starts."""
        self._cancelling = True
        for result in self.queue:
            self._end(result, "not started", "the batch was interrupted")
        self.queue.clear()
        for backend in self.backends:
            for result in list(backend.jobs):
                if result.job_id and not backend.retired:
                    self._cancel(backend, result)
            # Submitted but not accepted yet: `_apply` cancels it the moment the backend names the job.
        deadline = time.monotonic() + timeout
        while any(b.jobs and not b.retired for b in self.backends) and time.monotonic() < deadline:
            self.step()
            self.wait(0.1)
        for backend in self.backends:
            for result in backend.jobs:
                self._end(result, CANCELLED, "interrupted (the backend did not confirm the cancel)")
            backend.jobs.clear()

    def _cancel(self, backend: _Backend, result: ItemResult) -> None:
        try:
            backend.session.cancel(result.job_id)
        except Exception as exc:  # the backend is gone: nothing left to cancel there
            self._drop(backend, result)
            self._end(result, CANCELLED, f"interrupted; could not cancel on {backend.name}: {exc}")

    def shutdown(self) -> None:
        for backend in self.backends:
            backend.session.shutdown()

    # --- events ---------------------------------------------------------------------------------

    def _drop(self, backend: _Backend, result: ItemResult) -> None:
        if result in backend.jobs:
            backend.jobs.remove(result)

    def _apply(self, backend: _Backend, applied: Applied) -> None:
        for result in list(backend.jobs):
            self._apply_to(backend, result, applied)

    def _apply_to(self, backend: _Backend, result: ItemResult, applied: Applied) -> None:
        if result.request_id in applied.rejected:
            self._end(result, FAILED, f"refused by {backend.name}: {applied.rejected[result.request_id]}")
            self._drop(backend, result)
            return
        for job_id, request_id in applied.accepted.items():
            if request_id == result.request_id:
                result.job_id = job_id
                self._set_status(result, QUEUED, f"(job {job_id})")
                if self._cancelling:
                    self._cancel(backend, result)
                    return
        if not result.job_id:
            return
        view = backend.session.tracker.jobs.get(result.job_id)
        if view is None:
            return
        result.step = view.step
        final = applied.meshes.get(result.job_id)
        if view.state == RUNNING and result.status != RUNNING:
            result.started = result.started or time.monotonic()
            self._set_status(result, RUNNING, f"on {backend.name}")
        elif view.state == FINISHED and final is not None and final.final:
            self._drop(backend, result)
            self._finish(result, final)
        elif view.state in (FAILED, CANCELLED):
            self._drop(backend, result)
            self._end(result, view.state, view.reason or f"{view.state} on {backend.name}")

    def _finish(self, result: ItemResult, final: MeshToApply) -> None:
        result.step = final.step
        if not final.mesh.vertex_count:
            self._end(result, FAILED, "the result mesh is empty (nothing dense enough to extract)")
            return
        try:
            self.on_result(result, final)
        except Exception as exc:  # a full disk must not stop the rest of the batch
            self._end(result, FAILED, f"could not write the result: {exc}")
            return
        self._end(result, FINISHED, "")

    def _check_health(self, backend: _Backend, now: float) -> str:
        """Retire a backend that failed or stayed silent too long; returns its session's state."""
        status = backend.session.status()
        if status.state == "error":
            self._retire(backend, status.text)
        elif status.state in ("connecting", "starting"):
            if status.state == "connecting" and now - backend.since > self.connect_timeout:
                self._retire(backend, f"no answer within {self.connect_timeout:g} s")
        elif status.state == "lost":
            backend.silent_since = backend.silent_since or now
            if now - backend.silent_since > self.lost_timeout:
                self._retire(backend, f"silent for {self.lost_timeout:g} s")
        else:
            backend.silent_since = None
        return status.state

    def _retire(self, backend: _Backend, reason: str) -> None:
        backend.retired = reason
        self.log(f"backend {backend.name} dropped: {reason}")
        lost, backend.jobs = backend.jobs, []
        for result in reversed(lost):  # back to the front of the queue, in their order
            if result.job_id:
                try:
                    backend.session.cancel(result.job_id)  # if it is only unreachable, do not let it run on
                except Exception:
                    pass
            if result.attempts <= RETRIES:
                result.status, result.job_id, result.request_id, result.started = "pending", "", "", None
                self.queue.insert(0, result)
                self.log(f"{self._tag(result)} {result.item.prompt}: will run again on another backend")
            else:
                self._end(result, FAILED, f"{backend.name}: {reason}")

    def _submit(self, backend: _Backend, result: ItemResult) -> None:
        init_mesh = None
        if result.item.init_mesh:
            try:
                if self.load_init_mesh is None:
                    raise ValueError("this batch cannot read mesh files")
                init_mesh = self.load_init_mesh(result.item)
            except Exception as exc:  # an unreadable file fails its row; the backend takes the next one
                self._end(result, FAILED, f"init_mesh: {exc}")
                return
        try:
            result.request_id = backend.session.submit(result.item.spec, init_mesh=init_mesh)
        except Exception as exc:
            self.queue.insert(0, result)
            self._retire(backend, f"submit failed: {exc}")
            return
        result.attempts += 1
        result.backend = backend.name
        backend.jobs.append(result)
        self._set_status(result, "submitted", f"to {backend.name}")

    # --- reporting ------------------------------------------------------------------------------

    def _end(self, result: ItemResult, status: str, error: str) -> None:
        if result.started is not None:
            result.seconds = time.monotonic() - result.started
        result.error = error
        detail = f"in {result.seconds:.1f} s" if status == FINISHED and result.seconds is not None else error
        self._set_status(result, status, detail)

    def _set_status(self, result: ItemResult, status: str, detail: str = "") -> None:
        result.status = status
        files = " -> " + ", ".join(result.files.values()) if status == FINISHED and result.files else ""
        self.log(f"{self._tag(result)} {status}: {result.item.prompt}" + (f" {detail}" if detail else "") + files)
        if self.on_change is not None:
            self.on_change(result)

    def _progress_line(self, backend: _Backend, result: ItemResult) -> None:
        view = backend.session.tracker.jobs.get(result.job_id)
        if view is not None:
            self.log(f"{self._tag(result)} {result.item.prompt}: {view.summary()}")

    def _tag(self, result: ItemResult) -> str:
        return f"[{result.item.index}/{self.total}]"

