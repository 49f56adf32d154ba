"""Jobs on disk: one folder per job with its record, checkpoint, latest mesh and exported files.

The record (`job.json`) is rewritten atomically (and fsynced) on every state
change, so a server killed at any moment restarts with every job it knew:
the ones that were running come back `interrupted` and resume from their
checkpoint. A folder whose record cannot be read is listed as `damaged`
(never hidden), and temporary files a crash left behind are swept at start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blender_dreamfusion.shared import JobInfo, JobSpec, MeshData, Texture
from blender_dreamfusion.shared.atomic import TEMP_SUFFIX, atomic_write, fsync_folder
from blender_dreamfusion.shared.errors import safe_text
from blender_dreamfusion.shared.messages import ID_PATTERN
from blender_dreamfusion.shared.states import ACTIVE, DAMAGED, FINISHED, INTERRUPTED, JobState, QUEUED, RUNNING

_RECORD = "job.json"
#: What `list` and `status {}` show of a prompt and a reason (a single job's `status` shows them whole).
SUMMARY_PROMPT_CHARS = 200
SUMMARY_REASON_CHARS = 300


def default_data_dir() -> Path:
    """Where a server keeps its jobs unless told otherwise (the XDG data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "dreamfusion-blender"


@dataclass
class JobRecord:
    job_id: str
    spec: JobSpec
    state: JobState = QUEUED
    step: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    created: float = field(default_factory=time.time)
    reason: str = ""
    files: dict[str, str] = field(default_factory=dict)
    #: Who submitted it ("key:<CURVE public key>", or "session:<server run>:<n>" without CURVE); "" for jobs
    #: written before jobs had owners (everyone's).
    owner: str = ""
    #: The job this one continues (init = checkpoint from a job, or from a checkpoint in a job's folder); "" for none.
    parent: str = ""
    #: The Ray node that runs it, or ran it last ("" on a plain server).
    node: str = ""

    def info(self, summary: bool = False) -> JobInfo:
        loss = self.loss if self.loss is not None and np.isfinite(self.loss) else None
        prompt, reason = self.spec.prompt, self.reason[:2000]
        if summary:
            prompt, reason = _cut(prompt, SUMMARY_PROMPT_CHARS), _cut(reason, SUMMARY_REASON_CHARS)
        return JobInfo(job_id=self.job_id, state=self.state, prompt=prompt, step=self.step,
                       steps=self.spec.steps, loss=loss, elapsed=self.elapsed, created=self.created,
                       reason=reason, parent=self.parent or None, node=self.node or None)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "JobRecord":
        data = json.loads(text)
        data["spec"] = JobSpec.from_dict(data["spec"])
        return cls(**data)


@dataclass
class DamagedJob:
    """A job folder whose record cannot be read: listed, so it can be seen and deleted, but never run."""

    job_id: str
    folder: Path
    problem: str
    created: float = 0.0
    owner: str = ""

    state = DAMAGED

    def info(self, summary: bool = False) -> JobInfo:
        # Where it lies is the operator's to know (the server's log says), not every client's: a damaged job has no
        # owner, so under CURVE every key lists it.
        reason = f"its record cannot be read ({self.problem}); its files stay in its folder on the backend (the " \
                 "server's log names it); delete the job to free them"
        return JobInfo(job_id=self.job_id, state=DAMAGED, prompt="", created=self.created,
                       reason=_cut(reason, SUMMARY_REASON_CHARS if summary else 2000))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class JobStore:
    """Every job the server knows, in memory and under `root/jobs/<id>/`. Thread-safe."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._damaged: dict[str, DamagedJob] = {}
        self._disk: tuple[float, int] | None = None  # (when measured, bytes)

    # --- lifecycle ---------------------------------------------------------------

    def load(self) -> list[JobRecord]:
        """Read every job folder. Jobs that were running when the server died become `interrupted`; folders
        whose record cannot be read become `damaged`; temporary files a crash left are removed.

        Returns the jobs still waiting to run (queued), oldest first.
        """
        swept = self.sweep_temporary_files()
        if swept:
            print(f"dreamfusion-backend serve: removed {swept} temporary file(s) left by an earlier crash",
                  file=sys.stderr, flush=True)
        for folder in sorted(p for p in (self.root / "jobs").iterdir() if p.is_dir()):
            if not re.fullmatch(ID_PATTERN, folder.name):
                continue  # not a job folder this server made; no message could name it
            record_file = folder / _RECORD
            try:
                record = JobRecord.from_json(record_file.read_text(encoding="utf-8"))
                if record.job_id != folder.name:
                    raise ValueError(f"it names job {record.job_id!r}")
            except Exception as exc:  # noqa: BLE001 - any unreadable record is listed, never fatal
                problem = "job.json is missing" if not record_file.exists() else \
                    f"{type(exc).__name__}: {safe_text(exc, 200)}"
                self._damaged[folder.name] = DamagedJob(folder.name, folder, problem, _mtime(folder))
                print(f"dreamfusion-backend serve: job {folder.name} is damaged ({problem}); its files are in "
                      f"{folder}", file=sys.stderr, flush=True)
                continue
            if record.state == RUNNING:
                record.state = INTERRUPTED
                record.reason = "the backend stopped while this job was running; resume it to continue"
                record.step = self._checkpoint_step(record.job_id)
                self._write(record)
            self._jobs[record.job_id] = record
        return sorted((r for r in self._jobs.values() if r.state == QUEUED), key=lambda r: r.created)

    def _checkpoint_step(self, job_id: str) -> int:
        """The step the newest readable checkpoint holds (what a resume continues from), 0 for none."""
        from ..checkpoint import read_checkpoint_spec

        for path in self.checkpoints(job_id):
            try:
                return read_checkpoint_spec(path)[1]
            except Exception:  # noqa: BLE001 - an unreadable checkpoint: try the one before
                continue
        return 0

    def sweep_temporary_files(self) -> int:
        """Remove what interrupted writes left in job folders: ours (`*.tmp`) and safetensors' own (`.tmp*`)."""
        removed = 0
        for folder in (self.root / "jobs").iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.is_file() and (path.name.endswith(TEMP_SUFFIX) or path.name.startswith(".tmp")):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def create(self, spec: JobSpec, owner: str = "", parent: str = "", init_mesh: MeshData | None = None,
               init_uvs: np.ndarray | None = None) -> JobRecord:
        """A new queued job; its start mesh (one that travelled with the submit) is written before its record, so
        a job on disk always has what it needs to run."""
        record = JobRecord(job_id=uuid.uuid4().hex[:12], spec=spec, owner=owner, parent=parent)
        if init_mesh is not None:
            self.folder(record.job_id).mkdir(parents=True, exist_ok=True)
            self._save_npz(self.init_mesh_path(record.job_id), init_mesh, uvs=init_uvs)
        with self._lock:
            self._jobs[record.job_id] = record
            self._write(record)
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            record = self._jobs.get(job_id)
            return dataclasses.replace(record) if record else None

    def damaged(self, job_id: str) -> DamagedJob | None:
        with self._lock:
            return self._damaged.get(job_id)

    def all(self) -> list[JobRecord]:
        with self._lock:
            return sorted((dataclasses.replace(r) for r in self._jobs.values()), key=lambda r: r.created)

    def listing(self) -> list[JobRecord | DamagedJob]:
        """Every job, damaged ones included, oldest first (what `list` pages through)."""
        with self._lock:
            entries: list[JobRecord | DamagedJob] = [dataclasses.replace(r) for r in self._jobs.values()]
            entries += list(self._damaged.values())
        return sorted(entries, key=lambda r: (r.created, r.job_id))

    def count(self) -> int:
        with self._lock:
            return len(self._jobs) + len(self._damaged)

    def active_count(self, owner: str) -> int:
        """Jobs of `owner` that are queued or running (counted in place: a submit must not copy every record)."""
        with self._lock:
            return sum(1 for r in self._jobs.values() if r.owner == owner and r.state in ACTIVE)

    def delete(self, job_id: str) -> int:
        """Forget a job and remove its folder; returns the bytes freed. The job must not be running."""
        with self._lock:
            self._jobs.pop(job_id, None)
            self._damaged.pop(job_id, None)
            self._disk = None
        folder = self.folder(job_id)
        freed = _tree_size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        fsync_folder(folder.parent)
        return freed

    def disk_usage(self, max_age: float = 1.0) -> int:
        """Bytes under the jobs folder, measured at most every `max_age` seconds (a submit flood must not walk
        thousands of folders each time)."""
        now = time.monotonic()
        if self._disk is None or now - self._disk[0] > max_age:
            self._disk = (now, _tree_size(self.root / "jobs"))
        return self._disk[1]

    def prune_checkpoints(self, keep: int) -> int:
        """Retention: finished jobs keep one checkpoint (their fallback goes), and only the newest `keep` finished
        jobs keep theirs at all; their meshes and exported files stay. Returns the bytes freed."""
        with self._lock:
            finished = sorted((r for r in self._jobs.values() if r.state == FINISHED), key=lambda r: r.created)
        freed = 0
        for index, record in enumerate(reversed(finished)):
            paths = self.checkpoints(record.job_id)
            drop = paths if index >= keep else paths[1:]
            for path in drop:
                freed += _tree_size(path)
                path.unlink(missing_ok=True)
        if freed:
            self._disk = None
        return freed

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

    def save_checkpoint(self, job_id: str, trainer) -> Path:
        """Write the trainer's state as the job's checkpoint; the one before stays as its fallback."""
        from ..checkpoint import save_checkpoint

        return save_checkpoint(trainer, self.checkpoint(job_id), keep_previous=True)

    def put_checkpoint(self, job_id: str, data: bytes) -> Path:
        """A checkpoint written elsewhere (a Ray node), stored as `save_checkpoint` would have: the one before
        stays as its fallback."""
        from ..checkpoint import previous_checkpoint

        path = self.checkpoint(job_id)
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), keep_previous=previous_checkpoint(path))

    def put_file(self, job_id: str, name: str, data: bytes) -> Path:
        """A result file made elsewhere (a Ray node's `result.glb`), written into the job's folder."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) or name.startswith("."):
            raise ValueError(f"not a file name for a job folder: {name!r}")
        return atomic_write(self.folder(job_id) / name, lambda tmp: Path(tmp).write_bytes(data))

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def checkpoint(self, job_id: str) -> Path:
        return self.folder(job_id) / "checkpoint.safetensors"

    def checkpoints(self, job_id: str) -> list[Path]:
        """The job's checkpoints on disk, newest first (the current one, then the one kept before it)."""
        from ..checkpoint import previous_checkpoint  # not at the top: `serve --help` should not import torch

        current = self.checkpoint(job_id)
        return [p for p in (current, previous_checkpoint(current)) if p.is_file()]

    def mesh_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "mesh.npz"

    def init_mesh_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "init_mesh.npz"

    def save_mesh(self, job_id: str, mesh: MeshData) -> Path:
        """The job's newest mesh (streamed or final), so a result survives the client and the server."""
        return self._save_npz(self.mesh_path(job_id), mesh)

    def load_mesh(self, job_id: str) -> MeshData | None:
        loaded = _load_npz(self.mesh_path(job_id))
        return loaded[0] if loaded is not None else None

    def texture_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "texture.npz"

    def save_texture(self, job_id: str, texture: Texture) -> Path:
        """The final mesh's UVs and baked image, beside `mesh.npz`, for `result` after a restart."""
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                # Not compressed: `result` reads it on the server's loop, and inflating 48 MiB would stall it.
                np.savez(f, uvs=texture.uvs, image=texture.image)

        return atomic_write(self.texture_path(job_id), write)

    def load_texture(self, job_id: str) -> Texture | None:
        path = self.texture_path(job_id)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return Texture(np.array(data["uvs"]), np.array(data["image"]))

    def load_init_mesh(self, job_id: str) -> tuple[MeshData | None, np.ndarray | None]:
        """The start mesh that travelled with the job's submit, if one did, and its own per-corner UVs, if they
        travelled with it."""
        loaded = _load_npz(self.init_mesh_path(job_id))
        if loaded is None:
            return None, None
        mesh, extra = loaded
        return mesh, extra.get("uvs")

    @staticmethod
    def _save_npz(path: Path, mesh: MeshData, **extra: np.ndarray | None) -> Path:
        arrays = {name: value for name, value in extra.items() if value is not None}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, positions=mesh.positions, triangles=mesh.triangles, colors=mesh.colors, **arrays)

        return atomic_write(path, write)

    def _write(self, record: JobRecord) -> None:
        text = record.to_json()
        atomic_write(self.folder(record.job_id) / _RECORD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


_MESH_ARRAYS = ("positions", "triangles", "colors")


def _load_npz(path: Path) -> tuple[MeshData, dict[str, np.ndarray]] | None:
    """The mesh in `path` and any other arrays saved beside it (a start mesh's `uvs`), or None if no file."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        mesh = MeshData(np.array(data["positions"]), np.array(data["triangles"]), np.array(data["colors"]))
        return mesh, {name: np.array(data[name]) for name in data.files if name not in _MESH_ARRAYS}


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we looked
                pass
    return total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
