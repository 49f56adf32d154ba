"""How soon and how honestly a job shows itself: meshes early in a run then spaced, an ETA from the recent step
rate, and a progress line that says when the machine got busy (issue 33)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from blender_dreamfusion.addon_core.job_tracker import JobTracker
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.server import worker
from blender_dreamfusion.backend.trainer import EARLY_STREAMS, Trainer, streams_at
from blender_dreamfusion.shared import JobSpec, Progress


@pytest.mark.parametrize("every, expected", [(100, [10, 25, 50, 100, 200]), (30, [10, 25, 30, 60, 90, 120, 150, 180]),
                                             (5, list(range(5, 201, 5))), (0, [])])
def test_a_run_streams_early_then_every_stream_every_steps(every, expected):
    assert [step for step in range(1, 201) if streams_at(step, every)] == expected


def test_a_fresh_job_shows_its_first_mesh_at_step_10_and_a_resumed_one_keeps_its_interval(tiny_sd):
    spec = JobSpec(prompt="a red cube", model=str(tiny_sd), seed=3, steps=60, render_resolution=32,
                   mesh_resolution=32, stream_every=100)
    guidance = load_guidance(str(tiny_sd), torch.device("cpu"))
    seen = []
    Trainer(spec, guidance).run(on_stream=lambda snapshot: seen.append(snapshot.step))
    assert seen == [s for s in EARLY_STREAMS if s < 60] == [10, 25, 50]
    resumed = Trainer(spec.replace(steps=260), guidance)
    resumed.step = 60
    seen.clear()
    resumed.run(on_stream=lambda snapshot: seen.append(snapshot.step))
    assert seen == [100, 200]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_follows_the_recent_step_rate_not_the_first_steps(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(worker.time, "perf_counter", clock)
    sent: list[Progress] = []
    trainer = SimpleNamespace(step=0, spec=SimpleNamespace(steps=1000))
    reporter = worker._ProgressReporter("j" * 12, trainer, sent.append)
    for step in range(1, 201):  # 200 steps at 10 it/s, then the machine gets busy: 2 it/s
        clock.now += 0.1
        reporter.step(SimpleNamespace(step=step, loss=1.0))
    assert sent[-1].it_per_s == pytest.approx(10.0, rel=0.05)
    for step in range(201, 301):
        clock.now += 0.5
        reporter.step(SimpleNamespace(step=step, loss=1.0))
    last = sent[-1]
    assert last.it_per_s == pytest.approx(2.0, rel=0.05)  # since-start would say 300 / 70 s = 4.3
    assert last.eta == pytest.approx((1000 - last.step) / last.it_per_s, rel=0.01)


def test_the_progress_line_says_when_the_machine_got_busy():
    tracker = JobTracker()
    job = "a" * 12

    def progress(rate: float) -> Progress:
        return Progress(job_id=job, step=10, steps=100, it_per_s=rate, eta=90 / rate, phase="training")

    tracker.apply([progress(4.0)])
    view = tracker.jobs[job]
    assert not view.slowed and "busy" not in view.summary()
    tracker.apply([progress(2.5)])
    assert not view.slowed
    tracker.apply([progress(1.0)])
    assert view.slowed and "machine busy: 25% of this job's best speed" in view.summary()
    assert "machine busy" in view.detail_text()
