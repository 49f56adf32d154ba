"""Jobs trained in child processes of a plain server (`serve`), in the order they were queued.

Each of the server's `--workers` slots keeps one job process (`job_process.py`) and feeds it jobs one at a time.
The service's loop never runs job code: a job that sits in native code holding its process's GIL, crashes a
native library or grows without bound costs that process, not the server. The process reports back with the
reports a Ray actor sends (`job_host.py`), checked by the same `node_reports.apply_report`, so "a job somewhere
else reports to the service" is one code path on one box and on a cluster.

- **Warm**: a slot starts its process before the first job (the interpreter, torch and the backend imported), and
  a process whose job finished or was cancelled takes the next job with its prior still loaded. A process whose
  job failed is replaced (it may be broken: a CUDA error, a native crash), and so is one whose idle memory grew
  by more than `RECYCLE_GROWTH` (a leak must not build up across jobs).
- **Cancel and stop reach a job even inside native code**: the slot asks the job to stop after its step, and ends
  its process if it has not within the grace (`stop_grace`: a few seconds, or three of the job's steps when those
  are slower), saying so in the job's reason. A cancelled job ends `cancelled`, a server stop leaves it
  `interrupted` (resumable from its last checkpoint).
- **A crash fails the job**, with the signal or exit code in its reason; the slot starts a new process.
"""

from __future__ import annotations

import hmac
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from blender_dreamfusion.shared import Cancelled, Failed, Message, Progress
from blender_dreamfusion.shared.states import ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING

from ..threads import ThreadPolicy
from .job_host import job_payload
from .job_pipe import SECRET_VARIABLE, JobPipe, PipeClosed, ready
from .jobs import JobRecord, JobStore
from .node_reports import apply_report

#: Seconds a job has to stop after a cancel or a server stop before its process is ended (at least).
STOP_GRACE = 5.0
#: ... and at most, however slow its steps (a grace of three steps covers a step in progress and its checkpoint).
MAX_STOP_GRACE = 60.0
#: A warm process whose memory between jobs grew by more than this over its first idle size is replaced.
RECYCLE_GROWTH = 2**30
#: How often a slot looks up from its job's reports to see a cancel or a stop (seconds).
TICK = 0.2
#: Seconds a new job process has to connect back and say it is ready (the interpreter, torch and diffusers load
#: first: ~4 s alone, far longer on a machine busy with other work).
READY_TIMEOUT = 300.0
#: A process slower than this to get ready is logged (a sign of a machine short of cores or memory).
SLOW_START = 30.0
#: A job process's temporary folder: this, its server's process id, a dash and a random tail.
SCRATCH_PREFIX = "dreamfusion-jobprocess-"


class JobRunner(Protocol):
    """Where jobs train: the service talks to a runner only through this small surface, so `serve --ray` swaps in
    the Ray gateway's runner (`ray_runner.py`) without the service knowing where jobs train."""

    def start(self) -> None: ...
    def enqueue(self, job_id: str) -> None: ...
    #: Ask a queued or running job to stop (the service answers for a queued one; the job for a running one).
    def cancel(self, job_id: str) -> None: ...
    #: Best of N: the artist's pick of a candidate for a queued or running job (it takes it before its choice).
    def pick(self, job_id: str, candidate: int) -> None: ...
    #: The job ended or is queued again (resume): forget any stop asked of its earlier run.
    def forget(self, job_id: str) -> None: ...
    #: Jobs waiting to start, first in line first.
    def waiting(self) -> list[str]: ...
    #: Jobs one client may usefully keep queued or running at once (told to clients in `welcome.job_slots`).
    def slots(self) -> int: ...
    def shutdown(self) -> None: ...


@dataclass
class _Run:
    """A running job: which token its process knows it by, and what the service asked of it (from any thread)."""

    token: str
    cancel_asked: float | None = None
    #: The artist's pick of a best-of-N candidate; its slot tells the process.
    pick: int | None = None


class ProcessRunner:
    def __init__(self, workers: int, store: JobStore, emit: Callable[[Message], None], stopping: threading.Event,
                 device: str, on_started: Callable[[], None], stop_grace: float = STOP_GRACE,
                 threads: ThreadPolicy | None = None):
        self.store, self.emit, self.stopping, self.on_started = store, emit, stopping, on_started
        self.device, self.stop_grace, self.threads = device, stop_grace, threads or ThreadPolicy(workers=workers)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()  # asked to stop before or while they run
        self._running: dict[str, _Run] = {}
        self._picks: dict[str, int] = {}  # best of N: picks of queued or running jobs
        self._slots = [_Slot(self, f"job-slot-{i}") for i in range(max(1, workers))]
        #: Diagnostics (tests, bench): processes started, and jobs that ran on a warm process.
        self.processes_started = 0
        self.warm_starts = 0

    def start(self) -> None:
        remove_orphaned_scratch()
        for slot in self._slots:
            slot.start()

    def enqueue(self, job_id: str) -> None:
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            run = self._running.get(job_id)
            if run is not None and run.cancel_asked is None:
                run.cancel_asked = time.monotonic()  # its slot tells the process at its next tick

    def pick(self, job_id: str, candidate: int) -> None:
        with self._lock:
            self._picks[job_id] = candidate
            run = self._running.get(job_id)
            if run is not None:
                run.pick = candidate  # its slot tells the process at its next tick

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.discard(job_id)
            self._picks.pop(job_id, None)

    def waiting(self) -> list[str]:
        with self._queue.mutex:  # the line is the queue's own order: slots take jobs from its front
            return [job_id for job_id in self._queue.queue if job_id is not None]

    def slots(self) -> int:
        return len(self._slots)

    def shutdown(self) -> None:
        """Running jobs stop after their step (the caller has set `stopping`), or their processes are ended after
        the grace; queued ones stay queued."""
        for _ in self._slots:
            self._queue.put(None)
        for slot in self._slots:
            if slot.is_alive():
                slot.join()

    def _claim(self, job_id: str) -> tuple[JobRecord, _Run] | None:
        with self._lock:
            if job_id in self._cancelled:
                return None
            run = self._running[job_id] = _Run(token=uuid.uuid4().hex, pick=self._picks.get(job_id))
        record = self.store.transition(job_id, (QUEUED,), RUNNING, reason="")
        if record is None:  # cancelled while it waited, or queued twice
            with self._lock:
                self._running.pop(job_id, None)
            return None
        return record, run

    def _release(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)


class _JobProcess:
    """One job process and its end of the pipe.

    The process connects back to a listening socket on loopback and proves itself with a secret it was given in
    its environment (readable by its own user only), rather than inheriting one end of a socket pair: handing a
    socket to a child is POSIX-only (pass_fds), and the local backend the add-on starts runs on Windows too."""

    def __init__(self, threads: ThreadPolicy) -> None:
        self._secret = secrets.token_hex(32)
        self.started = time.monotonic()
        self._listener = socket.create_server(("127.0.0.1", 0))
        # The process's temporary files (each job's scratch folder, and whatever a library writes) go into a
        # folder of ours, removed once the process has ended: one ended after the grace or killed by a crash
        # cannot clean up after itself, and its job's checkpoints would stay in the system's temp folder.
        self.scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "blender_dreamfusion.backend.server.job_process", "--port",
                 str(self._listener.getsockname()[1]), *threads.arguments()],
                env={**os.environ, **threads.environment(), SECRET_VARIABLE: self._secret,
                     **{name: self.scratch for name in ("TMPDIR", "TEMP", "TMP")}},
                stdin=subprocess.DEVNULL, stdout=_log_fd())
        except BaseException:
            self._listener.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        self._pipe: JobPipe | None = None
        self.ready = False  # connected back and said hello
        self.idle_rss: int | None = None  # after its first job: the size a warm process may keep

    @property
    def pipe(self) -> JobPipe:
        """The pipe of a process that is ready (`wait_ready` returned True)."""
        assert self._pipe is not None and self.ready, "the job process is not ready"
        return self._pipe

    def wait_ready(self, give_up: Callable[[], bool]) -> bool:
        """Wait until the process has connected back and loaded what every job needs (its "hello"). The slot
        claims a job first and waits here, so the job shows as loading meanwhile, not queued. False when
        `give_up()` turned true first (the job was cancelled, the server is stopping): the process goes on
        starting and serves the next job. PipeClosed when it died or was not ready within READY_TIMEOUT."""
        while not self.ready:
            if give_up():
                return False
            if time.monotonic() - self.started > READY_TIMEOUT:
                raise PipeClosed(f"the job process was not ready within {READY_TIMEOUT:g} s ({self.how_it_ended()})")
            if self._pipe is None:
                conn = self._accept_one()
                if conn is not None:
                    self._pipe = JobPipe(conn)
                    self._listener.close()
                elif not self.alive():
                    raise PipeClosed(f"the job process did not connect ({self.how_it_ended()})")
                continue
            report = self._pipe.recv(timeout=TICK)
            if report is not None and report[0] == "hello":
                self.ready = True
                took = time.monotonic() - self.started
                if took > SLOW_START:
                    _log(f"job process {self.popen.pid} took {took:.0f} s to start (is the machine short of cores "
                         "or memory?)")
        return True

    def _accept_one(self) -> socket.socket | None:
        """The process's connection if it presents the secret within a tick (any other is closed)."""
        if not ready(self._listener, TICK):
            return None
        conn, _ = self._listener.accept()
        conn.settimeout(5.0)
        said = b""
        try:
            while len(said) < len(self._secret) and (chunk := conn.recv(len(self._secret) - len(said))):
                said += chunk
        except OSError:
            pass
        if not hmac.compare_digest(said, self._secret.encode()):
            conn.close()
            return None
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a cancel goes out at once
        return conn

    def alive(self) -> bool:
        return self.popen.poll() is None

    def end(self, wait: float = 0.0) -> None:
        """Close the pipe (the process then ends by itself), and kill it if it has not within `wait` seconds."""
        self._close()
        try:
            self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()
        self._close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _close(self) -> None:
        self._listener.close()
        if self._pipe is not None:
            self._pipe.close()

    def how_it_ended(self) -> str:
        try:
            code = self.popen.wait(2.0)  # its pipe just closed: it is ending
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                return f"it was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"it was killed by signal {-code}"
        return f"it exited with status {code}"


class _Slot(threading.Thread):
    """Feeds queued jobs, one at a time, to its job process. (Also the thread that starts each process: on Linux a
    child dies with the thread that made it, see `job_process._die_with_parent`.)"""

    def __init__(self, runner: ProcessRunner, name: str):
        super().__init__(name=name, daemon=True)
        self.runner = runner
        self.process: _JobProcess | None = None

    def run(self) -> None:
        try:
            self._fresh_process()  # warm before the first job
            while True:
                job_id = self.runner._queue.get()
                if job_id is None or self.runner.stopping.is_set():  # queued jobs stay queued for the next start
                    return
                try:
                    claimed = self.runner._claim(job_id)
                except Exception as exc:  # noqa: BLE001 - the store could not record the start: the job says so
                    traceback.print_exc()
                    self.runner._release(job_id)
                    self._fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
                    continue
                if claimed is None:
                    continue
                try:
                    self._announce(claimed[0])
                    self._run_job(*claimed)
                except Exception as exc:  # noqa: BLE001 - a bug here must end the job, not the slot
                    traceback.print_exc()
                    self._drop_process()
                    self._fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
                finally:
                    self.runner._release(job_id)
        finally:
            if self.process is not None:
                self.process.end(wait=2.0)

    def _announce(self, record: JobRecord) -> None:
        """Tell the job's clients it left the line (its process may take seconds to start and report: until then
        they would still read "queued #1"), and waiting jobs their new places. A failure to (a socket the service
        could not open) is logged, and never takes the slot down with the job it holds (a dead slot would leave
        that job running for ever)."""
        try:
            self.runner.emit(Progress(job_id=record.job_id, step=record.step, steps=record.spec.steps,
                                      elapsed=record.elapsed, phase="loading_model"))
            self.runner.on_started()
        except Exception:  # noqa: BLE001
            traceback.print_exc()

    def _fresh_process(self) -> None:
        if self.process is not None and self.process.alive():
            return
        self._drop_process()
        try:
            self.process = _JobProcess(self.runner.threads)  # the device travels with each job's payload
            self.runner.processes_started += 1
        except OSError as exc:  # no process could be started: the next job says so
            _log(f"cannot start a job process: {exc}")

    def _drop_process(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def _run_job(self, record: JobRecord, run: _Run) -> None:
        job_id = record.job_id
        warm = self.process is not None and self.process.alive() and self.process.idle_rss is not None
        self._fresh_process()
        if self.process is None:
            self._fail(job_id, "the server could not start a process for this job (see its log)")
            return
        self.runner.warm_starts += warm
        process = self.process
        try:
            payload = job_payload(self.runner.store, job_id, self.runner.device)
        except OSError as exc:  # its start file went between submit and start (the reason names no folder)
            self._fail(job_id, f"a file this job starts from can no longer be read ({exc.strerror or 'unreadable'})")
            return
        payload["run"] = run.token
        payload["pick"] = run.pick
        outcome = _Outcome()
        try:
            if not process.wait_ready(lambda: run.cancel_asked is not None or self.runner.stopping.is_set()):
                self._end_stopped(record)  # its process never had it: it goes on starting for the next job
                return
            process.pipe.send(("run", payload))
            self._follow(job_id, run, process, outcome)
        except PipeClosed as exc:  # the process ended (_settle says how), or never became ready
            outcome.closed = str(exc)
        except ValueError as exc:  # a report the service will not take: the process is not to be trusted now
            outcome.refused = str(exc)
        self._settle(job_id, process, outcome)

    def _follow(self, job_id: str, run: _Run, process: _JobProcess, outcome: "_Outcome") -> None:
        """Apply the run's reports until it is done; ask it to stop when the service does, and end its process
        when it has not stopped within the grace."""
        told_cancel = told_stop = False
        told_pick: int | None = None
        asked_at: float | None = None
        step_seconds = 0.0
        while True:
            now = time.monotonic()
            if run.cancel_asked is not None and not told_cancel:
                process.pipe.send(("cancel", run.token))
                told_cancel, asked_at = True, asked_at or now
            if run.pick is not None and run.pick != told_pick:
                process.pipe.send(("pick", run.token, run.pick))
                told_pick = run.pick
            if self.runner.stopping.is_set() and not told_stop:
                process.pipe.send(("stop",))
                told_stop, asked_at = True, asked_at or now
            grace = min(MAX_STOP_GRACE, max(self.runner.stop_grace, 3.0 * step_seconds))
            if asked_at is not None and now - asked_at > grace:
                outcome.ended_after = grace
                process.kill()
                return
            report = process.pipe.recv(timeout=TICK)
            if report is None:
                continue
            if report[0] == "done":
                outcome.done, outcome.rss = True, report[1] if len(report) > 1 else 0
                return
            message = apply_report(self.runner.store, job_id, report)
            if message is None:
                continue
            if isinstance(message, Progress) and message.it_per_s:
                step_seconds = 1.0 / message.it_per_s
            self.runner.emit(message)

    def _settle(self, job_id: str, process: _JobProcess, outcome: "_Outcome") -> None:
        """End the job if its process did not (it was ended, crashed, or broke the rules), and keep the process
        for the next job only if its job ended well."""
        record = self.runner.store.get(job_id)
        state = record.state if record is not None else "deleted"
        if state == RUNNING:
            if outcome.ended_after is not None:
                self._end_stopped(record, outcome.ended_after)
            elif self.runner.stopping.is_set():  # stopping before its process took the job: it waits for resume
                self._end_stopped(record)
            elif outcome.refused is not None:
                self._fail(job_id, f"the job's process sent a report the server refuses: {outcome.refused}")
            elif not process.ready:
                self._fail(job_id, f"the server could not start a process for this job: {outcome.closed}")
            else:
                self._fail(job_id, f"the job's process ended before the job did: {process.how_it_ended()}")
        keep = (outcome.done and state in (FINISHED, CANCELLED) and process.alive()
                and not self.runner.stopping.is_set())
        if keep:
            if process.idle_rss is None:
                process.idle_rss = outcome.rss
            elif outcome.rss > process.idle_rss + RECYCLE_GROWTH:
                _log(f"job process {process.popen.pid} grew to {outcome.rss >> 20} MiB between jobs; starting a "
                     "fresh one")
                keep = False
        if not keep:
            self._drop_process()
            if not self.runner.stopping.is_set():
                self._fresh_process()  # warm for the next job

    def _end_stopped(self, record: JobRecord, grace: float | None = None) -> None:
        """End a job the service asked to stop: `cancelled` (a client asked) or `interrupted` (the server stops).
        `grace`: we ended its process after that many seconds; None: its process never took the job."""
        job_id, store = record.job_id, self.runner.store
        why = "" if grace is None else f"; it did not stop within {grace:.0f} s, so its process was ended"
        if not self.runner.stopping.is_set():
            if store.transition(job_id, (RUNNING,), CANCELLED, reason=f"cancelled by a client{why}"):
                self.runner.emit(Cancelled(job_id=job_id, step=record.step))
        elif grace is None:
            store.transition(job_id, (RUNNING,), INTERRUPTED,
                             reason="the backend stopped while this job was starting; resume it")
        else:
            resume = ("resume it to continue from its checkpoint at step "
                      f"{record.step}" if store.checkpoints(job_id) else "resume it to start again")
            store.transition(job_id, (RUNNING,), INTERRUPTED,
                             reason=f"the backend stopped while this job was running{why}; {resume}")

    def _fail(self, job_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:2000]
        if self.runner.store.transition(job_id, ACTIVE, FAILED, reason=line) is not None:
            self.runner.emit(Failed(job_id=job_id, reason=line))


@dataclass
class _Outcome:
    done: bool = False  # the process said the run is over
    rss: int = 0  # its resident size after the run
    refused: str | None = None  # it sent a report the service refuses
    ended_after: float | None = None  # we ended it after this grace
    closed: str = ""  # why the pipe closed, if it did


def remove_orphaned_scratch() -> None:
    """Remove the temporary folders of job processes whose server is gone (killed, or the machine lost power: it
    had no chance to): each folder's name carries its server's process id. A folder whose id now belongs to
    another process is left alone: it may still be in use."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        owner = folder.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":  # Windows' os.kill ends the process whatever the signal: never ask it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _log_fd() -> int:
    """Where a job process prints: the server's own standard error (its log), or nowhere if that is closed."""
    try:
        os.fstat(2)
        return 2
    except OSError:
        return subprocess.DEVNULL


def _log(line: str) -> None:
    print(f"dreamfusion-backend serve: {line}", file=sys.stderr, flush=True)
