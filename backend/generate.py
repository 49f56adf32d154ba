"""`dreamfusion-backend generate`: one prompt to one mesh file, without a server."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from blender_dreamfusion.shared import JobSpec, MeshData
from blender_dreamfusion.shared.errors import ProtocolError
from blender_dreamfusion.shared.mesh import check_init_mesh

from .checkpoint import load_checkpoint, save_checkpoint
from .asset import Asset, asks_for_asset
from .export import FORMATS, PLY_NOTE, export_mesh, export_result
from .extract import Extraction
from .guidance import Guidance, load_guidance
from .mesh_import import MeshFileError, read_mesh_with_uvs
from .threads import ThreadGovernor, ThreadPolicy
from .trainer import StepStats, Trainer
from .work_budget import OverBudget, WorkBudget, check_work


class GenerateError(RuntimeError):
    """A reason to stop that the user can act on; the CLI prints it as one line."""


@dataclass
class GenerateResult:
    out: Path | None
    checkpoint: Path
    extraction: Extraction
    steps: int
    seconds: float
    stopped_early: bool
    #: The final mesh and texture as written (post-processed per the spec's output knobs).
    asset: Asset | None = None
    #: Every file written, `out` first (a textured .obj has its .mtl and .png beside it).
    files: list[Path] = field(default_factory=list)
    #: What the post-processing or the format could not do.
    notes: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenerateError("--device cuda: no CUDA device is available (torch "
                            f"{torch.__version__}); use --device cpu or install a CUDA build of torch")
    return torch.device(name)


def checkpoint_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.safetensors")


def make_trainer(spec: JobSpec, device: torch.device, on_loading=None,
                 load: Callable[[str, torch.device], Guidance] = load_guidance,
                 resume_from: Path | None = None, init_mesh: MeshData | None = None,
                 on_fitting: Callable[[], None] | None = None, init_uvs=None,
                 should_stop: Callable[[], bool] | None = None, budget: WorkBudget = WorkBudget()) -> Trainer:
    """The trainer for `spec`: fresh, from `spec.init_from` (a checkpoint, or a mesh file), from `init_mesh` (a
    start mesh that travelled with the submit), or continuing `resume_from` (a checkpoint of this very job).
    `on_fitting` is called before a start mesh is fitted or a shape is locked (the `fitting_mesh` phase).
    `init_uvs`: the start mesh's own per-corner UVs (a file's are read with it). A mesh read from a file here
    must fit `budget` (the CLI's, and a server's for files: a submit's own mesh was checked at submit);
    `should_stop` is asked during the fit (Stopped)."""
    # Check what is cheap to check before the (possibly slow) model load.
    checkpoint = resume_from
    if checkpoint is None and spec.init == "checkpoint":
        checkpoint = Path(spec.init_from).expanduser()
        if not checkpoint.is_file():
            raise GenerateError(f"init_from: checkpoint {spec.init_from!r} does not exist")
    if checkpoint is None and spec.init == "mesh" and init_mesh is None:
        if not spec.init_from:
            raise GenerateError("init = mesh needs a start mesh: --init-from FILE (.glb, .gltf, .obj or .ply)")
        try:
            init_mesh, init_uvs = read_mesh_with_uvs(spec.init_from)
        except (MeshFileError, ProtocolError) as exc:
            raise GenerateError(f"init_from: {exc}") from None
        try:
            check_init_mesh(init_mesh, "init_from")
        except ProtocolError as exc:  # it names the field itself: the words a submit's init_mesh is refused in
            raise GenerateError(str(exc)) from None
        try:
            check_work(spec, init_mesh, init_uvs, budget, mesh_field="init_from")
        except OverBudget as exc:
            raise GenerateError(str(exc)) from None
    if on_loading is not None:
        on_loading(spec.model)
    guidance = load(spec.model, device)
    try:
        guidance.check_prompt(spec.prompt)
    except ValueError as exc:
        raise GenerateError(str(exc)) from None
    if checkpoint is not None:
        trainer = load_checkpoint(checkpoint, spec, guidance, device, resume=resume_from is not None)
        if trainer.spec.lock_geometry and not trainer.locked:
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
            raise GenerateError(f"init mesh: {exc}") from None
    return trainer


def generate(spec: JobSpec, out: Path, device: str = "auto", save_every: int = 0, save_dir: Path | None = None,
             show_progress: bool = True, threads: ThreadPolicy | None = None) -> GenerateResult:
    """Train `spec` and write its result to `out`. `threads`: the CPU thread policy this process applied (the CLI
    does); its count then follows the cores other work leaves free while the job trains."""
    if out.suffix.lower() not in FORMATS:
        raise GenerateError(f"--out must end in {', '.join(FORMATS)}, got {out.name!r}")
    start = time.perf_counter()
    loading = (lambda m: print(f"loading model {m} ...", file=sys.stderr)) if show_progress else None
    trainer = make_trainer(spec, resolve_device(device), loading)
    governor = ThreadGovernor(threads) if threads is not None and trainer.device.type == "cpu" else None
    checkpoint = checkpoint_path_for(out)
    stop = _StopOnSignal()
    bar = _progress_bar(trainer, show_progress)

    def on_step(stats: StepStats) -> None:
        if governor is not None:
            governor.tick()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4g}", shading=stats.shading[:4], refresh=False)
        if save_every and save_dir is not None and stats.step % save_every == 0:
            save_checkpoint(trainer, save_dir / f"step_{stats.step:06d}.checkpoint.safetensors")
            snapshot = trainer.snapshot(preview=False).extraction
            if snapshot.mesh.vertex_count:
                export_mesh(snapshot.mesh, save_dir / f"step_{stats.step:06d}{out.suffix.lower()}")

    with stop:
        finished = trainer.run(on_step=on_step, should_stop=stop.requested)
    if bar is not None:
        bar.close()
    save_checkpoint(trainer, checkpoint)
    extraction = trainer.snapshot(preview=False).extraction
    if not extraction.mesh.vertex_count:
        return GenerateResult(None, checkpoint, extraction, trainer.step, time.perf_counter() - start,
                              stopped_early=not finished)
    if show_progress and asks_for_asset(spec):
        print("post-processing the final mesh ...", file=sys.stderr)
    asset = trainer.final_asset(extraction.mesh)
    files = export_result(asset.mesh, out, asset.texture)
    notes = list(asset.notes)
    if asset.texture is not None and out.suffix.lower() == ".ply":
        notes.append(PLY_NOTE)
    return GenerateResult(files[0], checkpoint, extraction, trainer.step, time.perf_counter() - start,
                          stopped_early=not finished, asset=asset, files=files, notes=notes)


def _progress_bar(trainer: Trainer, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=trainer.spec.steps, initial=trainer.step, unit="step", dynamic_ncols=True, file=sys.stderr,
                desc=trainer.spec.prompt[:30])


class _StopOnSignal:
    """Ctrl-C / SIGTERM finish the current step, then stop; the checkpoint and mesh are still written."""

    def __init__(self) -> None:
        self._stop = False
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self._stop

    def _handle(self, signum, frame) -> None:
        if self._stop:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self._stop = True
        print("\nstopping after this step; saving the checkpoint and mesh (Ctrl-C again to abort)",
              file=sys.stderr)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
