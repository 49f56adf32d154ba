"""One job's life, the one place every runner of a job calls: `generate` on the command line, a server's
worker in its job process, and a Ray actor (through the same worker).

- `start_trainer`: the trainer for a spec: fresh, from a start mesh (one that travelled with the submit, or a
  file), from another job's checkpoint, or continuing this job's own; locked when the spec or its parent says.
- `train_job` trains it (best of N first when the spec asks: candidates.py), with the runner's callbacks
  (progress, streaming, checkpoints, thread upkeep).
- `end_run`: its end: the mesh as extracted, made into what the spec asks for (smoothed, decimated, baked).
- `write_result`: that written as a file.

What differs between runners (where files go, how progress is told, how a stop is asked) stays theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from blender_dreamfusion.shared import JobSpec, MeshData
from blender_dreamfusion.shared.errors import ProtocolError
from blender_dreamfusion.shared.formats import READABLE
from blender_dreamfusion.shared.mesh import check_init_mesh

from .asset import Asset, asks_for_asset
from .candidates import Candidate, Choice, start_candidates, train_candidates
from .checkpoint import load_checkpoint
from .export import export_result
from .guidance import Guidance, load_guidance
from .mesh_import import MeshFileError, read_mesh_with_uvs
from .trainer import Snapshot, StepStats, Trainer
from .work_budget import OverBudget, WorkBudget, check_work


class JobError(RuntimeError):
    """A reason a job cannot start that the user can act on: the CLI prints it as one line, a server makes it the
    job's `failed` reason."""


def resolve_device(name: str) -> torch.device:
    """The torch device for `name` ("auto": CUDA when there is one, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise JobError("--device cuda: no CUDA device is available (torch "
                       f"{torch.__version__}); use --device cpu or install a CUDA build of torch")
    return torch.device(name)


def start_trainer(spec: JobSpec, device: torch.device, on_loading: Callable[[str], None] | None = None,
                  load: Callable[[str, torch.device], Guidance] = load_guidance,
                  resume_from: Path | None = None, init_mesh: MeshData | None = None,
                  on_fitting: Callable[[], None] | None = None, init_uvs=None,
                  should_stop: Callable[[], bool] | None = None, budget: WorkBudget = WorkBudget()) -> Trainer:
    """The trainer for `spec`: fresh, from `spec.init_from` (a checkpoint, or a mesh file), from `init_mesh` (a
    start mesh that travelled with the submit), or continuing `resume_from` (a checkpoint of this very job).
    `on_loading` is told the model before it loads; `on_fitting` is called before a start mesh is fitted or a
    shape is locked (the `fitting_mesh` phase). `init_uvs`: the start mesh's own per-corner UVs (a file's are read
    with it). A mesh read from a file here must fit `budget` (the CLI's, and a server's for files: a submit's own
    mesh was checked at submit); `should_stop` is asked during the fit (Stopped)."""
    # Check what is cheap to check before the (possibly slow) model load.
    checkpoint = resume_from
    if checkpoint is None and spec.init == "checkpoint":
        checkpoint = Path(spec.init_from).expanduser()
        if not checkpoint.is_file():
            raise JobError(f"init_from: checkpoint {spec.init_from!r} does not exist")
    if checkpoint is None and spec.init == "mesh" and init_mesh is None:
        init_mesh, init_uvs = _read_start_mesh(spec, budget)
    if on_loading is not None:
        on_loading(spec.model)
    guidance = load(spec.model, device)
    try:
        guidance.check_prompt(spec.prompt)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    if checkpoint is not None:
        trainer = load_checkpoint(checkpoint, spec, guidance, device, resume=resume_from is not None)
        if trainer.spec.lock_geometry and not trainer.locked:  # asked now of an unlocked parent's shape
            if on_fitting is not None:
                on_fitting()
            trainer.lock_geometry()
        return trainer
    trainer = Trainer(spec, guidance, device)
    if spec.init == "mesh":
        if on_fitting is not None:
            on_fitting()
        try:
            trainer.start_from_mesh(init_mesh, init_uvs, should_stop)
        except ValueError as exc:  # a mesh that encloses nothing, or has no area
            raise JobError(f"init mesh: {exc}") from None
    return trainer


def _read_start_mesh(spec: JobSpec, budget: WorkBudget):
    """init = mesh from a file (`init_from`): read, checked as a submit's start mesh is, and within `budget`."""
    if not spec.init_from:
        raise JobError(f"init = mesh needs a start mesh: --init-from FILE ({', '.join(READABLE[:-1])} or "
                       f"{READABLE[-1]})")
    try:
        mesh, uvs = read_mesh_with_uvs(spec.init_from)
    except (MeshFileError, ProtocolError) as exc:
        raise JobError(f"init_from: {exc}") from None
    try:
        check_init_mesh(mesh, "init_from")
    except ProtocolError as exc:  # it names the field itself: the words a submit's init_mesh is refused in
        raise JobError(str(exc)) from None
    try:
        check_work(spec, mesh, uvs, budget, mesh_field="init_from")
    except OverBudget as exc:
        raise JobError(str(exc)) from None
    return mesh, uvs


def train_job(trainer: Trainer, resumed: bool = False, on_step: Callable[[StepStats], None] | None = None,
              on_stream: Callable[[Snapshot], None] | None = None, should_stop: Callable[[], bool] | None = None,
              on_candidate: Callable[[Candidate, Snapshot], None] | None = None,
              on_choice: Callable[[Choice, Trainer], None] | None = None,
              picked: Callable[[], int | None] | None = None) -> tuple[Trainer, bool]:
    """Train `trainer`'s job to its last step: best of N first when its spec asks for candidates and the run is
    not a resume of this very job (candidates.py: `on_candidate` gets each candidate's streamed meshes,
    `picked` is asked for the artist's pick, `on_choice` hears the choice and gets the chosen trainer). Stopped
    before the choice, the judge chooses among the candidates as they are, so what was learnt is kept. Returns
    the trainer that went on (the chosen candidate's) and whether it reached the last step (False: `should_stop`
    asked to stop)."""
    if trainer.spec.candidates > 1 and not resumed:
        candidates = start_candidates(trainer)
        choice, stopped = train_candidates(candidates, on_step, on_candidate, should_stop, picked)
        trainer = candidates[choice.index].trainer
        if on_choice is not None:
            on_choice(choice, trainer)
        if stopped:
            return trainer, False
    return trainer, trainer.run(on_step, on_stream, should_stop=should_stop)


@dataclass
class RunEnd:
    """A run's end: its mesh as extracted (and a preview, when asked) and the asset made of it."""

    snapshot: Snapshot
    #: What the spec asks for (smoothed, decimated, UV-mapped and baked); the extracted mesh itself, without a
    #: texture, when it asks for nothing, when there is no mesh, or when the run was not finished.
    asset: Asset

    @property
    def mesh(self) -> MeshData:
        return self.asset.mesh

    @property
    def reason(self) -> str:
        """What the extraction and the post-processing have to say about the result, in one line (may be empty)."""
        return "; ".join(part for part in (self.snapshot.extraction.message, *self.asset.notes) if part)


def end_run(trainer: Trainer, finish: bool, loss: float | None = None, elapsed: float = 0.0, preview: bool = True,
            should_stop: Callable[[], bool] | None = None,
            on_baking: Callable[[], None] | None = None) -> RunEnd:
    """The final mesh of `trainer`, made into the asset its spec asks for when `finish` (a server finishes only a
    run that reached its last step; the CLI also one stopped by Ctrl-C). `on_baking` is called before a
    post-processing that has work to do; `should_stop` is asked during the bake (Stopped goes to the caller)."""
    snapshot = trainer.snapshot(loss, elapsed, preview=preview)
    mesh = snapshot.extraction.mesh
    if not (finish and mesh.vertex_count and asks_for_asset(trainer.spec)):
        return RunEnd(snapshot, Asset(mesh, None))
    if on_baking is not None:
        on_baking()
    return RunEnd(snapshot, trainer.final_asset(mesh, should_stop))


def write_result(end: RunEnd, out: Path) -> list[Path]:
    """The result written to `out` (its suffix picks the format); every file written, `out` first."""
    return export_result(end.asset.mesh, out, end.asset.texture)
