"""Jobs on disk: one folder per job with its record, checkpoint, latest mesh and exported files.

The record (`job.json`) is rewritten atomically on every state change, so a
server killed at any moment restarts with every job it knew: the ones that
were running come back `interrupted` and resume from their checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared import JobInfo, JobSpec, MeshData

from shared.atomic import atomic_write

TERMINAL = ("finished", "failed", "cancelled")
#: States `resume` accepts: the job stopped before its last step and may have a checkpoint.
RESUMABLE = ("interrupted", "cancelled", "failed")
_RECORD = "job.json"


def default_data_dir() -> Path:
    """Where a server keeps its jobs unless told otherwise (the XDG data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "dreamfusion-blender"


@dataclass
class JobRecord:
    job_id: str
    spec: JobSpec
    state: str = "queued"
    step: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    created: float = field(default_factory=time.time)
    reason: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def info(self) -> JobInfo:
        loss = self.loss if self.loss is not None and np.isfinite(self.loss) else None
        return JobInfo(job_id=self.job_id, state=self.state, prompt=self.spec.prompt, step=self.step,
                       steps=self.spec.steps, loss=loss, elapsed=self.elapsed, created=self.created,
                       reason=self.reason[:2000])

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "JobRecord":
        data = json.loads(text)
        data["spec"] = JobSpec.from_dict(data["spec"])
        return cls(**data)


class JobStore:
    """Every job the server knows, in memory and under `root/jobs/<id>/`. Thread-safe."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}

    # --- lifecycle ---------------------------------------------------------------

    def load(self) -> list[JobRecord]:
        """Read every job folder. Jobs that were running when the server died become `interrupted`.

        Returns the jobs still waiting to run (queued), oldest first.
        """
        for record_file in sorted((self.root / "jobs").glob(f"*/{_RECORD}")):
            try:
                record = JobRecord.from_json(record_file.read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # an unreadable record is not worth refusing to start over
            if record.state == "running":
                record.state = "interrupted"
                record.reason = "the backend stopped while this job was running; resume it to continue"
                if self.checkpoint(record.job_id).is_file():
                    from ..checkpoint import read_checkpoint_spec

                    try:
                        record.step = read_checkpoint_spec(self.checkpoint(record.job_id))[1]
                    except Exception:  # a checkpoint we cannot read means starting over, not failing here
                        record.step = 0
                else:
                    record.step = 0
                self._write(record)
            self._jobs[record.job_id] = record
        return sorted((r for r in self._jobs.values() if r.state == "queued"), key=lambda r: r.created)

    def create(self, spec: JobSpec) -> JobRecord:
        record = JobRecord(job_id=uuid.uuid4().hex[:12], spec=spec)
        with self._lock:
            self._jobs[record.job_id] = record
            self._write(record)
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            record = self._jobs.get(job_id)
            return dataclasses.replace(record) if record else None

    def all(self) -> list[JobRecord]:
        with self._lock:
            return sorted((dataclasses.replace(r) for r in self._jobs.values()), key=lambda r: r.created)

    def update(self, job_id: str, *, persist: bool = True, **changes) -> JobRecord:
        """Change fields of a job; state changes are written to disk at once, step counts when `persist`."""
        with self._lock:
            record = self._jobs[job_id]
            for name, value in changes.items():
                setattr(record, name, value)
            if persist:
                self._write(record)
            return dataclasses.replace(record)

    def transition(self, job_id: str, from_states: tuple[str, ...], to_state: str, **changes) -> JobRecord | None:
        """Move a job to `to_state` only if it is in one of `from_states` (atomic: a worker claiming a job and a
        client cancelling it cannot both win). Returns the new record, or None when the job was elsewhere."""
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None or record.state not in from_states:
                return None
            record.state = to_state
            for name, value in changes.items():
                setattr(record, name, value)
            self._write(record)
            return dataclasses.replace(record)

    # --- files -------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def checkpoint(self, job_id: str) -> Path:
        return self.folder(job_id) / "checkpoint.safetensors"

    def save_mesh(self, job_id: str, mesh: MeshData) -> Path:
        """The job's newest mesh (streamed or final), so a result survives the client and the server."""
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, positions=mesh.positions, triangles=mesh.triangles, colors=mesh.colors)

        return atomic_write(self.folder(job_id) / "mesh.npz", write)

    def load_mesh(self, job_id: str) -> MeshData | None:
        path = self.folder(job_id) / "mesh.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return MeshData(np.array(data["positions"]), np.array(data["triangles"]), np.array(data["colors"]))

    def _write(self, record: JobRecord) -> None:
        text = record.to_json()
        atomic_write(self.folder(record.job_id) / _RECORD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
