"""Jobs trained by worker threads in the server's own process (plain `serve`), in the order they were queued.

The service talks to a runner only through this small surface, so `serve --ray` swaps in the Ray gateway's
runner (`ray_runner.py`) without the service knowing where jobs train.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Protocol

import torch

from blender_dreamfusion.shared import Message

from .jobs import JobStore
from .worker import Control, GuidanceCache, Worker


class JobRunner(Protocol):
    def start(self) -> None: ...
    def enqueue(self, job_id: str) -> None: ...
    #: Ask a queued or running job to stop (the service answers for a queued one; the job for a running one).
    def cancel(self, job_id: str) -> None: ...
    #: The job ended or is queued again (resume): forget any stop asked of its earlier run.
    def forget(self, job_id: str) -> None: ...
    #: Jobs waiting to start, first in line first.
    def waiting(self) -> list[str]: ...
    #: Jobs one client may usefully keep queued or running at once (told to clients in `welcome.job_slots`).
    def slots(self) -> int: ...
    def shutdown(self) -> None: ...


class LocalRunner:
    def __init__(self, workers: int, store: JobStore, emit: Callable[[Message], None], stopping: threading.Event,
                 device: torch.device, on_started: Callable[[], None]):
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._controls: dict[str, Control] = {}
        guidance = GuidanceCache()
        self._workers = [Worker(f"worker-{i}", store, self._queue, emit, self._controls, stopping, device, guidance,
                                on_started=on_started)
                         for i in range(max(1, workers))]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def enqueue(self, job_id: str) -> None:
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> None:
        self._controls.setdefault(job_id, Control()).cancel = True

    def forget(self, job_id: str) -> None:
        self._controls.pop(job_id, None)

    def waiting(self) -> list[str]:
        with self._queue.mutex:  # the line is the queue's own order: workers take jobs from its front
            return [job_id for job_id in self._queue.queue if job_id is not None]

    def slots(self) -> int:
        return len(self._workers)

    def shutdown(self) -> None:
        """Running jobs stop after their step (the caller has set `stopping`); queued ones stay queued."""
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
