"""`dreamfusion-backend generate`: one prompt to one mesh file, without a server."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.formats import written_format

from .asset import Asset
from .checkpoint import save_checkpoint
from .export import export_mesh, lost_texture_note
from .extract import Extraction
from .candidates import Choice, choice_line
from .job_run import JobError, end_run, resolve_device, start_trainer, train_job, write_result
from .threads import ThreadGovernor, ThreadPolicy
from .trainer import StepStats, Trainer


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
    #: Best of N (spec.candidates > 1): which candidate went on, every candidate's seed and score.
    choice: Choice | None = None


def checkpoint_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.safetensors")


def generate(spec: JobSpec, out: Path, device: str = "auto", save_every: int = 0, save_dir: Path | None = None,
             show_progress: bool = True, threads: ThreadPolicy | None = None) -> GenerateResult:
    """Train `spec` and write its result to `out`. `threads`: the CPU thread policy this process applied (the CLI
    does); its count then follows the cores other work leaves free while the job trains."""
    try:
        written_format(out.name)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    start = time.perf_counter()
    loading = (lambda m: print(f"loading model {m} ...", file=sys.stderr)) if show_progress else None
    trainer = start_trainer(spec, resolve_device(device), loading)
    governor = ThreadGovernor(threads) if threads is not None and trainer.device.type == "cpu" else None
    checkpoint = checkpoint_path_for(out)
    stop = _StopOnSignal()
    bar = _progress_bar(trainer, show_progress)

    choices: list[Choice] = []

    def on_step(stats: StepStats) -> None:
        if governor is not None:
            governor.tick()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4g}", shading=stats.shading[:4], refresh=False)
        choosing = trainer.spec.candidates > 1 and not choices  # the job's own trainer is not chosen yet
        if save_every and save_dir is not None and stats.step % save_every == 0 and not choosing:
            save_checkpoint(trainer, save_dir / f"step_{stats.step:06d}.checkpoint.safetensors")
            snapshot = trainer.snapshot(preview=False).extraction
            if snapshot.mesh.vertex_count:
                export_mesh(snapshot.mesh, save_dir / f"step_{stats.step:06d}{out.suffix.lower()}")

    def on_choice(choice: Choice, chosen: Trainer) -> None:
        nonlocal trainer
        trainer = chosen  # its checkpoints from here on
        choices.append(choice)
        if show_progress and bar is not None:
            bar.write(choice_line(choice))

    with stop:
        trainer, finished = train_job(trainer, on_step=on_step, should_stop=stop.requested, on_choice=on_choice)
    if bar is not None:
        bar.close()
    save_checkpoint(trainer, checkpoint)
    baking = (lambda: print("post-processing the final mesh ...", file=sys.stderr)) if show_progress else None
    # Stopped early by Ctrl-C, the mesh so far is still the result: finished as the spec asks.
    end = end_run(trainer, finish=True, preview=False, on_baking=baking)
    extraction = end.snapshot.extraction
    if not extraction.mesh.vertex_count:
        return GenerateResult(None, checkpoint, extraction, trainer.step, time.perf_counter() - start,
                              stopped_early=not finished, choice=choices[0] if choices else None)
    files = write_result(end, out)
    notes = list(end.asset.notes)
    if note := lost_texture_note(out, end.asset.texture):
        notes.append(note)
    return GenerateResult(files[0], checkpoint, extraction, trainer.step, time.perf_counter() - start,
                          stopped_early=not finished, asset=end.asset, files=files, notes=notes,
                          choice=choices[0] if choices else None)


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
