"""One job on a Ray node: the actor `serve --ray` places per job, and the scratch job folder it trains in.

The actor runs the very worker code a plain server runs (`Worker.run_guarded`), against a `ReplicaStore`: a
job folder in the node's temporary space that reports every change it is asked to keep (record fields,
meshes, the texture, checkpoints, result files) to the gateway as it happens. Those reports and the job's
messages (in the wire format, so the gateway checks them like any peer's) are what `run` yields: a Ray
streaming generator, so they reach the gateway in order, one at a time, while the job trains. The gateway's
folder stays the job's only durable copy; the node keeps nothing once the actor ends.

Ray needs this module importable on every node: install the same `blender-dreamfusion[ray]` everywhere.
"""

from __future__ import annotations

import dataclasses
import queue
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from blender_dreamfusion.shared import Message, Texture, __version__
from blender_dreamfusion.shared.framing import encode

from .jobs import JobRecord, JobStore

#: What a node reports, in order (the first item of each yielded tuple).
MESSAGE, UPDATE, MESH, TEXTURE, CHECKPOINT, FILE = "message", "update", "mesh", "texture", "checkpoint", "file"
#: Reports a job may have made that its generator has not yielded yet.
REPORTS_IN_FLIGHT = 16
#: A payload's files the actor may be given: the job's checkpoints and its start mesh (names in the job folder).
PAYLOAD_FILES = ("checkpoint.safetensors", "checkpoint.prev.safetensors", "init_mesh.npz")


class ReplicaStore(JobStore):
    """A job folder on the training node whose changes are also sent (`report`) to the gateway's own store.

    Paths stay this scratch folder's: the gateway keeps only their file names and names its own folder to
    clients (`node_reports`).
    """

    def __init__(self, root: Path, report: Callable[[tuple], None]):
        super().__init__(root)
        self.report = report

    def adopt(self, record: JobRecord, files: dict[str, bytes]) -> JobRecord:
        """Take the job as the gateway has it: its record and the files it needs to continue."""
        folder = self.folder(record.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if name in PAYLOAD_FILES:
                (folder / name).write_bytes(data)
        with self._lock:
            self._jobs[record.job_id] = record
        return dataclasses.replace(record)

    def update(self, job_id: str, *, persist: bool = True, **changes) -> JobRecord:
        if "files" in changes:  # the files first, so the record never names one the gateway lacks
            for path in changes["files"].values():
                local = Path(path)
                self.report((FILE, local.name, local.read_bytes()))
        record = super().update(job_id, persist=False, **changes)
        self.report((UPDATE, changes, persist))
        return record

    def save_mesh(self, job_id: str, mesh) -> Path:
        path = super().save_mesh(job_id, mesh)
        self.report((MESH, mesh.positions, mesh.triangles, mesh.colors))
        return path

    def save_texture(self, job_id: str, texture: Texture) -> Path:
        path = super().save_texture(job_id, texture)
        self.report((TEXTURE, texture.uvs, texture.image))
        return path

    def save_checkpoint(self, job_id: str, trainer) -> Path:
        path = super().save_checkpoint(job_id, trainer)
        self.report((CHECKPOINT, path.read_bytes()))
        return path

    def _write(self, record: JobRecord) -> None:
        pass  # the record lives on the gateway; changes travel as UPDATE reports


class JobActor:
    """Trains a job on the node Ray placed it on, then perhaps the next ones (the gateway hands a warm actor to
    the next job in line). `run` is the only long call; `cancel` and `stop` arrive beside it (the actor is made
    with max_concurrency > 1), and the job sees them at its next step."""

    def __init__(self) -> None:
        from .worker import Control, GuidanceCache

        self.control = Control()
        self.stopping = threading.Event()
        # Cancels are for one run (a token the gateway makes per run): one may arrive before its run starts, and
        # a late one for an earlier run must not stop the next job on this warm actor.
        self._lock = threading.Lock()
        self._run = ""
        self._cancelled: set[str] = set()
        # Kept between runs: a warm actor handed to the next job keeps its prior loaded (same model: no load).
        self.guidance = GuidanceCache()

    def ready(self) -> tuple[str, str]:
        """Where the actor runs and which version it is: answered once Ray has placed it."""
        import ray

        return f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})", __version__

    def run(self, payload: dict[str, Any]) -> Iterator[tuple]:
        """Yield the job's reports and messages until it ends."""
        from ..generate import resolve_device
        from .worker import Control, Worker

        # Bounded: when the gateway falls behind, Ray pauses this generator and the job pauses at its next report,
        # instead of piling meshes and checkpoints up in the node's memory.
        reports: queue.Queue[tuple | None] = queue.Queue(maxsize=REPORTS_IN_FLIGHT)
        record = JobRecord.from_json(payload["record"])
        with self._lock:
            self._run = payload["run"]
            self.control = Control(cancel=self._run in self._cancelled)
        with tempfile.TemporaryDirectory(prefix="dreamfusion-job-") as scratch:
            store = ReplicaStore(Path(scratch), reports.put)
            if payload.get("init_from") is not None:  # a start file on the gateway: this node gets a copy
                suffix, data = payload["init_from"]
                local = Path(scratch) / f"init_from{suffix}"
                local.write_bytes(data)
                record = dataclasses.replace(record, spec=dataclasses.replace(record.spec, init_from=str(local)))
            record = store.adopt(record, payload.get("files", {}))

            def emit(message: Message) -> None:
                reports.put((MESSAGE, [bytes(frame) for frame in encode(message)]))

            worker = Worker("ray-job", store, queue.Queue(), emit, {}, self.stopping,
                            resolve_device(payload.get("device", "auto")), self.guidance)

            def train() -> None:
                try:
                    worker.run_guarded(record, self.control)
                finally:
                    reports.put(None)

            threading.Thread(target=train, name=f"job-{record.job_id}", daemon=True).start()
            while (report := reports.get()) is not None:
                yield report

    def cancel(self, run: str) -> None:
        """Stop the run `run` after its step (at once if it has not begun)."""
        with self._lock:
            self._cancelled.add(run)
            if run == self._run:
                self.control.cancel = True

    def stop(self) -> None:
        """The gateway is stopping: the job saves a checkpoint after its step and ends `interrupted`."""
        self.stopping.set()
