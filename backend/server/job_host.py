"""One job trained away from the service: in a child process of a plain server (`job_process.py`) or in a Ray
actor on a node (`ray_job.py`). Both run this code; only the transport of its reports differs.

The host runs the very worker code (`Worker.run_guarded`) against a `ReplicaStore`: a scratch job folder that
reports every change it is asked to keep (record fields, meshes, the texture, checkpoints, result files) as it
happens. Those reports and the job's messages (in the wire format, so the service checks them like any peer's:
`node_reports.apply_report`) are what `JobHost.run` yields, in order, while the job trains. The service's folder
stays the job's only durable copy; the host keeps nothing once the run ends.

The other side of the same idea is `job_payload`: what the service sends so that a host can run a job (its record,
its checkpoints and start mesh, and any start file the spec names), read from the service's store.
"""

from __future__ import annotations

import dataclasses
import queue
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from blender_dreamfusion.shared import Message, Texture
from blender_dreamfusion.shared.framing import encode

from .jobs import JobRecord, JobStore

if TYPE_CHECKING:
    from ..threads import ThreadPolicy

#: What a host reports, in order (the first item of each report tuple).
MESSAGE, UPDATE, MESH, TEXTURE, CHECKPOINT, FILE = "message", "update", "mesh", "texture", "checkpoint", "file"
#: Reports a job may have made that the transport has not taken yet: a slow service pauses the job at its next
#: report instead of piling meshes and checkpoints up in the host's memory.
REPORTS_IN_FLIGHT = 16
#: A payload's files the host may be given: the job's checkpoints and its start mesh (names in the job folder).
PAYLOAD_FILES = ("checkpoint.safetensors", "checkpoint.prev.safetensors", "init_mesh.npz")


class ReplicaStore(JobStore):
    """A job folder on the host whose changes are also sent (`report`) to the service's own store.

    Paths stay this scratch folder's: the service keeps only their file names and names its own folder to
    clients (`node_reports`).
    """

    def __init__(self, root: Path, report: Callable[[tuple], None]):
        super().__init__(root)
        self.report = report

    def adopt(self, record: JobRecord, files: dict[str, bytes]) -> JobRecord:
        """Take the job as the service has it: its record and the files it needs to continue."""
        folder = self.folder(record.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if name in PAYLOAD_FILES:
                (folder / name).write_bytes(data)
        with self._lock:
            self._jobs[record.job_id] = record
        return dataclasses.replace(record)

    def update(self, job_id: str, *, persist: bool = True, **changes) -> JobRecord:
        if "files" in changes:  # the files first, so the record never names one the service lacks
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
        pass  # the record lives with the service; changes travel as UPDATE reports


class JobHost:
    """Trains one job at a time, then perhaps the next ones (a warm host keeps its prior loaded). `run` is the only
    long call; `cancel` and `stop` arrive beside it from another thread, and the job sees them at its next step."""

    def __init__(self, threads: ThreadPolicy | None = None) -> None:
        from ..threads import ThreadGovernor
        from .worker import Control, GuidanceCache

        # A job process's threads follow the machine (`threads.py`); a Ray actor's are Ray's to set (num_cpus).
        self.governor = ThreadGovernor(threads) if threads is not None else None

        self.control = Control()
        self.stopping = threading.Event()
        # Cancels are for one run (a token the service makes per run): one may arrive before its run starts, and
        # a late one for an earlier run must not stop the next job on this warm host.
        self._lock = threading.Lock()
        self._run = ""
        self._cancelled: set[str] = set()
        self._picks: dict[str, int] = {}  # best of N: the artist's pick per run, which may also come first
        # Kept between runs: the next job on the same model skips the load.
        self.guidance = GuidanceCache()

    def run(self, payload: dict[str, Any]) -> Iterator[tuple]:
        """Yield the job's reports and messages until it ends."""
        from ..job_run import resolve_device
        from .worker import Control, Worker

        reports: queue.Queue[tuple | None] = queue.Queue(maxsize=REPORTS_IN_FLIGHT)
        record = JobRecord.from_json(payload["record"])
        with self._lock:
            self._run = payload["run"]
            pick = self._picks.pop(self._run, payload.get("pick"))
            self.control = Control(cancel=self._run in self._cancelled, pick=pick if isinstance(pick, int) else None)
        with tempfile.TemporaryDirectory(prefix="dreamfusion-job-") as scratch:
            store = ReplicaStore(Path(scratch), reports.put)
            if payload.get("init_from") is not None:  # a start file of the service's: the host gets a copy
                suffix, data = payload["init_from"]
                local = Path(scratch) / f"init_from{suffix}"
                local.write_bytes(data)
                record = dataclasses.replace(record, spec=dataclasses.replace(record.spec, init_from=str(local)))
            record = store.adopt(record, payload.get("files", {}))

            def emit(message: Message) -> None:
                reports.put((MESSAGE, [bytes(frame) for frame in encode(message)]))

            worker = Worker(store, emit, self.stopping, resolve_device(payload.get("device", "auto")),
                            self.guidance, self.governor)

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

    def pick(self, run: str, candidate: int) -> None:
        """Best of N: the artist's pick for the run `run`, taken between two of its candidates' steps (before its
        choice; after it, the pick changes nothing)."""
        with self._lock:
            if run == self._run:
                self.control.pick = candidate
            elif len(self._picks) < 64:  # for a run yet to begin; bounded against a flood of stale tokens
                self._picks[run] = candidate

    def stop(self) -> None:
        """The service is stopping: the job saves a checkpoint after its step and ends `interrupted`."""
        self.stopping.set()


def job_payload(store: JobStore, job_id: str, device: str) -> dict[str, Any]:
    """What a host needs to run the job: its record, its checkpoints and start mesh, and any start file the spec
    names on the service's machine (a Ray node cannot read that disk; a child process is given the same bytes, so
    both hosts take one path). The caller adds the run's token as "run"."""
    record = store.get(job_id)
    folder = store.folder(job_id)
    files = {name: (folder / name).read_bytes() for name in PAYLOAD_FILES if (folder / name).is_file()}
    init_from = None
    if record.spec.init in ("checkpoint", "mesh") and record.spec.init_from and \
            not any(name.startswith("checkpoint") for name in files):
        path = Path(record.spec.init_from)
        init_from = ("".join(path.suffixes[-1:]), path.read_bytes())
    return {"record": record.to_json(), "files": files, "init_from": init_from, "device": device}
