"""The worker: train one claimed job and report through `emit` (progress, updates, the end) and its store.

A worker runs inside a job host, never in the service's process: it hands
messages to `emit` and files to its store, which the host reports to the
service. Every failure of a job ends as that job's `failed` with a
one-line reason; the host goes on with the next one.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from blender_dreamfusion.shared import Cancelled, Chosen, Failed, Finished, Message, Progress
from blender_dreamfusion.shared.formats import RESULT_FORMAT
from blender_dreamfusion.shared.states import CANCELLED, FAILED, FINISHED, INTERRUPTED

from ..candidates import Candidate, Choice
from ..checkpoint import CheckpointError
from ..guidance import Guidance, ModelLoadError, load_guidance
from ..job_run import JobError, end_run, start_trainer, train_job, write_result
from ..threads import ThreadGovernor
from ..trainer import Snapshot, StepStats, Trainer
from ..work_budget import Stopped
from .jobs import JobRecord, JobStore

#: Seconds between `progress` messages of one job.
PROGRESS_INTERVAL = 0.5
#: The step rate (and so the ETA) is measured over about this many of the latest seconds: a job's first steps
#: (warming caches) and a slow patch an hour ago say little about its next minutes.
RATE_WINDOW = 20.0
#: Checkpoint interval in steps for jobs that do not stream (stream_every = 0).
CHECKPOINT_EVERY = 100


@dataclass
class Control:
    """What the server may ask of one job."""

    cancel: bool = False
    #: Best of N: the candidate the artist picked (`pick`), until the choice is made.
    pick: int | None = None


class GuidanceCache:
    """The most recently used prior stays loaded: consecutive jobs on one model skip the load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str] | None = None
        self._guidance: Guidance | None = None

    def __call__(self, model: str, device: torch.device) -> Guidance:
        with self._lock:
            key = (model, str(device))
            if self._key != key:
                self._guidance = None  # free the old one before loading the next
                self._guidance = load_guidance(model, device)
                self._key = key
            return self._guidance


class Worker:
    """Runs claimed jobs inside a job host (`job_host.py`: a plain server's job process, or a Ray actor)."""

    def __init__(self, store: JobStore, emit: Callable[[Message], None], stopping: threading.Event,
                 device: torch.device, guidance: GuidanceCache, governor: ThreadGovernor | None = None):
        self.store, self.emit = store, emit
        self.stopping = stopping
        self.device, self.guidance = device, guidance
        # CPU threads follow the cores other work leaves free (a GPU job's threads matter little).
        self.governor = governor if device.type == "cpu" else None

    def run_guarded(self, record: JobRecord, control: Control) -> None:
        """Run one claimed job to its end; whatever it raises becomes its `failed`, never the worker's end."""
        try:
            self.run_job(record, control)
        except Exception as exc:  # never let one job take the worker down
            traceback.print_exc()
            self._fail(record.job_id, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            torch_cleanup()

    def run_job(self, record: JobRecord, control: Control) -> None:
        job_id, spec = record.job_id, record.spec
        self.emit(Progress(job_id=job_id, step=record.step, steps=spec.steps, elapsed=record.elapsed,
                           phase="loading_model"))
        def fitting() -> None:
            self.emit(Progress(job_id=job_id, step=record.step, steps=spec.steps, elapsed=record.elapsed,
                               phase="fitting_mesh"))

        should_stop = lambda: control.cancel or self.stopping.is_set()  # noqa: E731
        try:
            trainer = self._trainer(job_id, spec, fitting, should_stop)
        except (JobError, ModelLoadError, CheckpointError, ValueError, OSError) as exc:
            self._fail(job_id, str(exc))
            return
        except Stopped:  # cancelled, or the server stopping, while the start mesh was fitted
            self._stopped(job_id, record.step, dict(step=record.step, elapsed=record.elapsed))
            return
        interval = spec.stream_every or CHECKPOINT_EVERY
        resumed = bool(self.store.checkpoints(job_id))  # this job's own: it carries on, its choice made
        reporter = _ProgressReporter(job_id, trainer, self.emit, already=record.elapsed if trainer.step else 0.0)
        # Best of N: until the choice there is no one trainer of the job to checkpoint (a job stopped before it
        # starts its candidates again: they train the same way); the chosen one's checkpoints follow.
        current: list[Trainer | None] = [None if spec.candidates > 1 and not resumed else trainer]

        def on_step(stats: StepStats) -> None:
            reporter.step(stats)
            if self.governor is not None:
                self.governor.tick()
            if stats.step % interval == 0 and stats.step < spec.steps and current[0] is not None:
                self.store.save_checkpoint(job_id, current[0])
                self.store.update(job_id, step=stats.step, loss=stats.loss, elapsed=reporter.elapsed())

        def on_stream(snapshot: Snapshot) -> None:
            self.store.save_mesh(job_id, snapshot.extraction.mesh)
            self.emit(snapshot.as_update(job_id))

        def on_candidate(candidate: Candidate, snapshot: Snapshot) -> None:
            self.emit(snapshot.as_update(job_id, candidate=candidate.index, seed=candidate.seed))

        def on_choice(choice: Choice, chosen: Trainer) -> None:
            current[0] = chosen
            self.emit(Chosen(job_id=job_id, step=chosen.step, candidate=choice.index, by=choice.by,
                             seeds=list(choice.seeds), scores=list(choice.scores)))

        try:
            trainer, done = train_job(trainer, resumed, on_step, on_stream, should_stop, on_candidate, on_choice,
                                      picked=lambda: control.pick)
        except Exception as exc:
            # Keep what was learnt: the checkpoint of the last good step lets the user resume.
            step = current[0].step if current[0] is not None else trainer.step
            self._fail(job_id, f"training stopped at step {step}: {type(exc).__name__}: {exc}")
            return
        self._finish(job_id, trainer, reporter, done, should_stop)

    def _trainer(self, job_id: str, spec, on_fitting: Callable[[], None],
                 should_stop: Callable[[], bool] | None = None) -> Trainer:
        """A fresh trainer, or one continuing the job's newest readable checkpoint: a damaged checkpoint falls
        back to the one kept before it, so a crash mid-write costs one interval, not the job."""
        candidates = self.store.checkpoints(job_id)
        problems = []
        for path in candidates:
            try:
                return start_trainer(spec, self.device, load=self.guidance, resume_from=path, on_fitting=on_fitting)
            except (JobError, ModelLoadError):
                raise  # about the job, not the file: another checkpoint would fail the same way
            except Exception as exc:  # noqa: BLE001 - a truncated file raises whatever safetensors raises
                # The job's reason names the file, never the server's folders (its error quotes the full path).
                problems.append(f"{path.name} ({type(exc).__name__}: {str(exc).replace(str(path), path.name)})")
                print(f"dreamfusion-backend serve: job {job_id}: cannot resume from {path.name} ({exc}); "
                      "trying the checkpoint before it", file=sys.stderr, flush=True)
        if problems:  # never a silent restart from step 0: the progress is lost, and the job says so
            damaged = "its only checkpoint is" if len(problems) == 1 else "both its checkpoints are"
            raise CheckpointError(f"cannot resume: {damaged} damaged, so the progress it held is lost "
                                  f"({'; '.join(problems)}); submit the job again to start it from step 0")
        init_mesh, init_uvs = self.store.load_init_mesh(job_id)
        return start_trainer(spec, self.device, load=self.guidance, init_mesh=init_mesh, init_uvs=init_uvs,
                            on_fitting=on_fitting, should_stop=should_stop)

    def _finish(self, job_id: str, trainer: Trainer, reporter: "_ProgressReporter", done: bool,
                should_stop: Callable[[], bool] | None = None) -> None:
        common = dict(step=trainer.step, loss=reporter.last_loss, elapsed=reporter.elapsed())
        if not done and trainer.step == reporter.first_step:
            # Stopped before its first step (cancelled while loading, or the server stopping): nothing learnt,
            # so nothing written; a job that never started keeps no checkpoint.
            self._stopped(job_id, trainer.step, common)
            return
        checkpoint = self.store.save_checkpoint(job_id, trainer)
        progress = dict(job_id=job_id, step=trainer.step, steps=trainer.spec.steps, loss=reporter.last_loss,
                        it_per_s=reporter.last_rate, elapsed=reporter.elapsed())
        self.emit(Progress(**progress, eta=0.0 if done else None, phase="extracting"))
        try:
            end = end_run(trainer, finish=done, loss=reporter.last_loss, elapsed=reporter.elapsed(),
                          should_stop=should_stop, on_baking=lambda: self.emit(Progress(**progress, eta=0.0,
                                                                                        phase="baking")))
        except Stopped:  # cancelled while baking: the checkpoint above keeps every step
            self._stopped(job_id, trainer.step, common)
            return
        self.store.save_mesh(job_id, end.mesh)
        if done:
            files = {}
            if end.asset.texture is not None:
                self.store.save_texture(job_id, end.asset.texture)
            if end.mesh.vertex_count:
                result = self.store.folder(job_id) / f"result{RESULT_FORMAT}"
                files[RESULT_FORMAT[1:]] = str(write_result(end, result)[0])
            self.store.update(job_id, state=FINISHED, files=files, reason=end.reason, **common)
            self.emit(Finished(job_id=job_id, step=trainer.step, elapsed=reporter.elapsed(),
                               checkpoint=str(checkpoint), files=files, mesh=end.mesh, texture=end.asset.texture,
                               preview=end.snapshot.as_update(job_id).preview))
        else:
            self._stopped(job_id, trainer.step, common)

    def _stopped(self, job_id: str, step: int, common: dict) -> None:
        if not self.stopping.is_set():  # stopped early and the server goes on: a cancel
            self.store.update(job_id, state=CANCELLED, reason="cancelled by a client", **common)
            self.emit(Cancelled(job_id=job_id, step=step))
        else:  # the server is shutting down: the job waits for `resume`
            self.store.update(job_id, state=INTERRUPTED,
                              reason="the backend stopped while this job was running; resume it to continue",
                              **common)

    def _fail(self, job_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:2000] or "unknown error"
        self.store.update(job_id, state=FAILED, reason=line)
        self.emit(Failed(job_id=job_id, reason=line))


class _ProgressReporter:
    """`progress` at most every PROGRESS_INTERVAL seconds, and always for the last step. Its rate is the recent one
    (RATE_WINDOW), meshes streamed in between included, so the ETA follows the machine as it is now."""

    def __init__(self, job_id: str, trainer: Trainer, emit: Callable[[Message], None], already: float = 0.0):
        self.job_id, self.trainer, self.emit = job_id, trainer, emit
        self.already = already  # seconds spent before a resume
        self.start = time.perf_counter()
        self.first_step = trainer.step
        self.last_sent = 0.0
        self.last_loss: float | None = None
        self.last_rate = 0.0
        self._recent: deque[tuple[float, int]] = deque([(self.start, trainer.step)])

    def elapsed(self) -> float:
        return self.already + time.perf_counter() - self.start

    def step(self, stats: StepStats) -> None:
        self.last_loss = stats.loss if math.isfinite(stats.loss) else None
        now = time.perf_counter()
        self._recent.append((now, stats.step))
        while len(self._recent) > 2 and now - self._recent[1][0] >= RATE_WINDOW:
            self._recent.popleft()  # keep one sample at least RATE_WINDOW old: the window is never empty
        steps = self.trainer.spec.steps
        if now - self.last_sent < PROGRESS_INTERVAL and stats.step < steps:
            return
        self.last_sent = now
        then, step_then = self._recent[0]
        rate = self.last_rate = (stats.step - step_then) / max(1e-9, now - then)  # this session's, not a resume's
        eta = (steps - stats.step) / rate if rate > 0 else None
        self.emit(Progress(job_id=self.job_id, step=stats.step, steps=steps, loss=self.last_loss,
                           it_per_s=rate, eta=eta, elapsed=self.elapsed()))


def torch_cleanup() -> None:
    # A finished job's activations and grids are garbage now; give the GPU memory back for the next one.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
