"""What a server lets in: its limits (jobs, disk, queue per client, retention), the folders a job may read, and
the cheap checks a `submit` passes before it becomes a job.

Every refusal is a (field, reason) pair that the server sends as `rejected`; each reason names the limit and
what to do about it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_dreamfusion.shared import JobSpec, model_source
from blender_dreamfusion.shared.errors import safe_text

from ..work_budget import DEFAULT_MAX_BAKE_TEXELS, DEFAULT_MAX_FIT_WORK
from .jobs import JobStore

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


class Refused(Exception):
    """A submit (or command) the server will not take: the field at fault (None for a server limit) and the
    reason, for `rejected`."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Limit:
    """How a server limit is offered on the command line: `serve`'s flag for each ServerLimits field is made from
    this (`commands.add_limit_arguments`), so a new limit is one field here."""

    #: The flag's help; "{default}" is replaced by the default as the flag takes it.
    help: str
    #: The largest value the flag accepts (0 always turns the limit off).
    maximum: int = 10**9
    #: Given and shown as a size ("50G", parse_size), not a plain number.
    size: bool = False


def _limit(default: int, help: str, **options) -> Any:
    return dataclasses.field(default=default, metadata={"limit": Limit(help, **options)})


@dataclass(frozen=True)
class ServerLimits:
    """The bounds a server keeps. 0 turns a limit off. Each is a `serve` flag of the same name."""

    #: Jobs kept (any state, damaged ones included); the next submit is refused.
    max_jobs: int = _limit(1000, "jobs kept, in any state; further submits are refused (default {default})")
    #: Bytes the job folder may hold before submits are refused.
    max_disk: int = _limit(50 * 2**30, "job folder quota, e.g. 50G or 800M; submits are refused above it (default "
                                       "{default})", maximum=2**60, size=True)
    #: Queued or running jobs one client (session, or CURVE key) may have at once.
    max_queued_per_client: int = _limit(32, "queued or running jobs one client may have at once (default {default})")
    #: Finished jobs whose checkpoints are kept (newest first); older ones keep their mesh and files only.
    keep_checkpoints: int = _limit(20, "finished jobs that keep their checkpoint, newest first; older ones keep their "
                                       "mesh and files (default {default}; 0: none once finished)")
    #: Winding-number work one start mesh's fit may take (backend/work_budget.py: ~55 ns a unit on one core);
    #: a mesh of large, overlapping triangles over it is refused at submit, naming init_mesh.
    max_fit_work: int = _limit(DEFAULT_MAX_FIT_WORK, "winding-number work one start mesh may take to fit (about 55 ns "
                               "a unit on one core); a mesh of large overlapping triangles over it is refused at "
                               "submit (default {default}; a 100k-triangle sphere needs about 1.5 M)", maximum=10**15)
    #: Texels one bake into a start mesh's own UVs may touch; more is refused at submit, naming init_uvs.
    max_bake_texels: int = _limit(DEFAULT_MAX_BAKE_TEXELS, "texels one bake into a start mesh's own UVs may touch; UVs "
                                  "over it are refused at submit (default {default}: four layers of a 4096 texture)",
                                  maximum=10**15)


def parse_size(text: str) -> int:
    """'50G', '512M', '2.5GiB' or plain bytes -> bytes; ValueError naming the forms allowed."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; use bytes or a number with K, M, G or T (e.g. 50G)")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match[2].lower()]
    return int(float(match[1]) * scale)


def format_size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class PathPolicy:
    """Which files on the server a job may name: inside the data folder (checkpoints of its jobs) or one of the
    configured roots (`--allow-path`). Anything else is refused with the same words whether or not it exists,
    so the server is no oracle for what is on its disk, and no refusal names a folder of the server's: where it
    keeps its jobs and what it allows are the operator's to know."""

    def __init__(self, data_dir: Path, roots: tuple[Path, ...] = ()):
        self.data_dir = _real(data_dir)
        self.roots = tuple(_real(r) for r in roots)

    def resolve(self, text: str, *, data_dir_too: bool) -> Path | None:
        """The real path `text` names if it lies inside an allowed folder, else None. Relative paths are refused:
        they would resolve against wherever the server happened to be started."""
        path = Path(text).expanduser()
        if not path.is_absolute():
            return None
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the OS refuses
            return None
        roots = (*self.roots, self.data_dir) if data_dir_too else self.roots
        return real if any(real.is_relative_to(root) for root in roots) else None

    def describe(self, data_dir_too: bool) -> str:
        """What a path may name, in words that name no folder."""
        if data_dir_too:
            return ("give a job id, or a path inside a folder the backend's operator allows (serve --allow-path)"
                    if self.roots else "give a job id; this backend allows no other folders (its operator can add "
                                       "one with serve --allow-path DIR)")
        return ("its operator chooses them (serve --allow-path)" if self.roots else
                "it allows none (its operator can add one with serve --allow-path DIR)")

    def scrub(self, text: str) -> str:
        """`text` with the server's own folders cut out: the last guard for refusals that quote a library's
        error (safetensors, the OS), which may name the file's real path."""
        for folder in sorted({str(self.data_dir), *map(str, self.roots)}, key=len, reverse=True):
            if folder != "/":
                text = text.replace(folder, "…")
        return text


@dataclass(frozen=True)
class Admitted:
    """A submit the server takes: the spec to run (files resolved) and the job it continues, if any."""

    spec: JobSpec
    parent: str = ""


def admit(spec: JobSpec, store: JobStore, paths: PathPolicy, can_read_job, has_mesh: bool = False) -> Admitted:
    """The spec to run, with any file it names resolved to its real path, or Refused: what can be refused at
    submit time, cheaply. `can_read_job(job_id)` says whether the submitter may start from that job (a path inside
    the data folder is that job's, and is checked the same way); `has_mesh` whether the submit carries its start
    mesh."""
    parent = ""
    readable = _ReadableJobs(store, paths, can_read_job)
    if model_source(spec.model) == "local":
        _allowed_path("model", spec.model, paths, readable, data_dir_too=False, is_there=Path.is_dir,
                      outside="is not inside a folder this backend allows models from",
                      missing="no such folder on the backend's machine")
        spec = _with_folder_recommendations(spec)
    if spec.init == "mesh":
        spec = _admit_mesh(spec, paths, readable, has_mesh)
    if spec.init == "checkpoint":
        spec, parent = _admit_checkpoint(spec, store, paths, readable)
    if model_source(spec.model) == "builtin":
        from ..toy import parse_builtin_prompt
        from ..toy.vocab import VocabularyError

        try:
            parse_builtin_prompt(spec.model, spec.prompt)
        except VocabularyError as exc:
            raise Refused("prompt", str(exc)) from None
    return Admitted(spec, parent)


def _with_folder_recommendations(spec: JobSpec) -> JobSpec:
    """A partial submit's left-out fields take what its local model folder recommends: read only here, after the
    path policy allowed the folder (the decoder applied what needs no file)."""
    from blender_dreamfusion.shared.errors import SpecError
    from blender_dreamfusion.shared.recommended import recommendations

    try:
        return spec.fill_left_out(recommendations(spec.model))
    except SpecError as exc:  # a folder recommending what the spec cannot be
        raise Refused(exc.field, f"model: the folder's recommended {exc}") from None


class _ReadableJobs:
    """Ownership for paths: a file inside the data folder belongs to the job whose folder holds it, and the
    submitter may name it only if it may read that job (the rule for a job id). Without this a client that gets
    "no job" for another key's job id could still start from that job's checkpoint by its path."""

    def __init__(self, store: JobStore, paths: PathPolicy, can_read_job):
        self.store, self.paths, self.can_read_job = store, paths, can_read_job
        self.jobs_folder = store.root.resolve() / "jobs"

    def job(self, job_id: str) -> bool:
        """Whether `job_id` is a job the submitter may start from."""
        return self.store.get(job_id) is not None and bool(self.can_read_job(job_id))

    def owner_of(self, real: Path) -> str | None:
        """The job whose folder holds the real path `real`; "" inside the data folder but in no job's folder;
        None outside the data folder (the folder rules alone decide then)."""
        if not real.is_relative_to(self.paths.data_dir):
            return None
        if real.is_relative_to(self.jobs_folder) and real != self.jobs_folder:
            return real.relative_to(self.jobs_folder).parts[0]
        return ""

    def may_name(self, real: Path) -> bool:
        owner = self.owner_of(real)
        return owner is None or (owner != "" and self.job(owner))


def _admit_mesh(spec: JobSpec, paths: PathPolicy, readable: _ReadableJobs, has_mesh: bool) -> JobSpec:
    from blender_dreamfusion.shared.formats import READABLE, read_format

    if not spec.init_from:
        if not has_mesh:
            raise Refused("init_mesh", "init = mesh needs a start mesh: send it with the submit (init_mesh), or name "
                                       f"a {', '.join(READABLE)} file on the backend in init_from")
        return spec
    path = _allowed_path("init_from", spec.init_from, paths, readable, data_dir_too=False, is_there=Path.is_file,
                         outside="is not inside a folder this backend allows meshes from",
                         missing="no such mesh file")
    if read_format(path.name) is None:
        raise Refused("init_from", f"init_from: a start mesh must be one of {', '.join(READABLE)}")
    return dataclasses.replace(spec, init_from=str(path))


def _admit_checkpoint(spec: JobSpec, store: JobStore, paths: PathPolicy,
                      readable: _ReadableJobs) -> tuple[JobSpec, str]:
    """Resolve a continuation's checkpoint; it keeps its parent's lock (a locked shape stays locked)."""
    from ..checkpoint import CheckpointError, continuing_spec

    parent = ""
    if readable.job(spec.init_from):
        checkpoints = store.checkpoints(spec.init_from)
        if not checkpoints:
            raise Refused("init_from", f"init_from = {spec.init_from!r}: that job has no checkpoint (it never "
                                       "started, or the retention policy removed it)")
        # Continuing another job: the spec records the checkpoint file it started from.
        parent, path = spec.init_from, checkpoints[0]
    else:
        path = _allowed_path("init_from", spec.init_from, paths, readable, data_dir_too=True, is_there=Path.is_file,
                             outside="is neither a job on this backend nor a path inside the folders it allows",
                             missing="no such checkpoint file")
        parent = readable.owner_of(path) or ""  # a checkpoint file in a job's folder: still that job's child
    try:
        spec = continuing_spec(spec, path)
    except CheckpointError as exc:
        # The error quotes the file's real path (a symlink's target, the data folder): say what, not where.
        problem = str(exc).replace(f" {str(path)!r}", "").replace(f"{str(path)!r}", "the file")
        raise Refused("init_from", safe_text(paths.scrub(f"init_from: {problem}"), 500)) from None
    return dataclasses.replace(spec, init_from=str(path)), parent


def _allowed_path(field: str, text: str, paths: PathPolicy, readable: _ReadableJobs, *, data_dir_too: bool,
                  is_there, outside: str, missing: str) -> Path:
    """The real path `text` names, or Refused: first whether it is inside an allowed folder (the same words
    whether or not it exists), then, inside the data folder, whether it is a job the submitter may read (the
    same words as a missing file, so another client's job is no more visible by path than by id), and only then
    whether it exists. The path is not repeated back: the client knows what it sent, and a refusal names no
    folder of the server's."""
    path = paths.resolve(text, data_dir_too=data_dir_too)
    if path is None:
        raise Refused(field, f"{field} {outside}: {paths.describe(data_dir_too)}")
    if not readable.may_name(path) or not is_there(path):
        raise Refused(field, f"{field}: {missing}")
    return path


def _real(path: Path) -> Path:
    return Path(path).expanduser().resolve()
