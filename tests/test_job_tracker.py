"""The client-side job view: what the panel shows and which mesh the scene gets, from backend events."""

from __future__ import annotations

import json

import numpy as np

from blender_dreamfusion.backend.guidance.loading import builtin_folder
from blender_dreamfusion.shared import JobSpec, MeshData
from blender_dreamfusion.addon_core.job_tracker import JobTracker, format_seconds
from blender_dreamfusion.shared.messages import (Accepted, Cancelled, Failed, Finished, Image, JobInfo, Progress,
                                                 Rejected, StatusReply, Update)
from blender_dreamfusion.shared.recommended import BUILTIN_RECOMMENDATIONS

SPEC = JobSpec(prompt="a red cube", steps=100, seed=1)


def _mesh(n: int = 3) -> MeshData:
    return MeshData.coerce(np.random.default_rng(n).random((n, 3)), [[0, 1, 2]])


def _update(step: int, job: str = "j1") -> Update:
    return Update(job_id=job, step=step, steps=100, mesh=_mesh(step + 3), preview=None)


def _accepted(tracker: JobTracker, job: str = "j1") -> None:
    tracker.submitted("r1", SPEC)
    tracker.apply([Accepted(request_id="r1", job_id=job, spec=SPEC)])


def test_only_the_newest_mesh_per_job_is_handed_out():
    tracker = JobTracker()
    _accepted(tracker)
    applied = tracker.apply([_update(10), _update(30), _update(20), _update(5, "j2")])
    assert applied.meshes["j1"].step == 30 and applied.meshes["j2"].step == 5
    assert tracker.jobs["j1"].state == "running" and tracker.jobs["j1"].mesh_step == 30
    # An update older than what the scene already shows is not applied again.
    assert "j1" not in tracker.apply([_update(25)]).meshes


def test_the_final_mesh_wins_and_is_resent_by_result():
    tracker = JobTracker()
    _accepted(tracker)
    finished = Finished(job_id="j1", step=100, elapsed=12.0, mesh=_mesh(9), preview=Image(np.zeros((4, 4, 3),
                                                                                                  np.uint8)))
    applied = tracker.apply([_update(90), finished, _update(95)])
    assert applied.meshes["j1"].final and applied.meshes["j1"].step == 100
    assert tracker.jobs["j1"].state == "finished" and tracker.jobs["j1"].fraction == 1.0
    again = tracker.apply([Finished(request_id="r9", job_id="j1", step=100, mesh=_mesh(9))])
    assert again.meshes["j1"].final  # a `result` reply re-sends the final mesh: apply it


def test_progress_summary_and_states():
    tracker = JobTracker()
    _accepted(tracker)
    assert tracker.submitting == 0 and tracker.jobs["j1"].state == "queued" and tracker.jobs["j1"].steps == 100
    tracker.apply([Progress(job_id="j1", step=40, steps=100, loss=0.8412, it_per_s=3.94, eta=15.2)])
    view = tracker.jobs["j1"]
    assert view.summary() == "step 40/100 · 3.9 it/s · ETA 0:15 · loss 0.841" and view.fraction == 0.4
    assert view.bar_text() == "40/100 · ETA 0:15" and view.detail_text() == "3.9 it/s · loss 0.841"
    tracker.apply([Cancelled(job_id="j1", step=41)])
    assert view.state == "cancelled" and view.step == 41 and not view.active
    tracker.apply([Failed(job_id="j2", reason="out of memory")])
    assert tracker.jobs["j2"].state == "failed" and tracker.jobs["j2"].reason == "out of memory"


def test_refusals_become_notices_naming_the_field():
    tracker = JobTracker()
    tracker.submitted("r1", SPEC)
    applied = tracker.apply([Rejected(request_id="r1", reason="'a red dragon' is outside the vocabulary",
                                      field="prompt")])
    assert applied.notices == ["refused (prompt): 'a red dragon' is outside the vocabulary"]
    assert tracker.submitting == 0 and not tracker.jobs


def test_lost_backend_interrupts_active_jobs_until_it_answers_again():
    tracker = JobTracker()
    _accepted(tracker)
    tracker.apply([_update(10)])
    tracker.apply([Finished(job_id="j0", step=5, mesh=_mesh())])
    assert tracker.connection_lost() == {"j1"}
    assert tracker.jobs["j1"].state == "interrupted" and tracker.jobs["j0"].state == "finished"
    # The restarted backend reports the job (it checkpointed it as interrupted); a resume re-queues it.
    tracker.apply([StatusReply(jobs=[JobInfo(job_id="j1", state="interrupted", prompt="a red cube", step=10,
                                             steps=100)])])
    assert tracker.jobs["j1"].state == "interrupted" and tracker.jobs["j1"].step == 10
    tracker.apply([Accepted(request_id="r2", job_id="j1", spec=SPEC)])
    assert tracker.jobs["j1"].state == "queued"


def test_format_seconds():
    assert format_seconds(5) == "0:05" and format_seconds(125.4) == "2:05" and format_seconds(3725) == "1:02:05"


def test_builtin_recommendations_match_the_shipped_weights():
    index = json.loads((builtin_folder("toy-shapes") / "model_index.json").read_text())
    assert index["_recommended_spec"] == BUILTIN_RECOMMENDATIONS["toy-shapes"]


def test_the_view_says_which_phase_a_job_is_in_and_its_place_in_line():
    tracker = JobTracker()
    _accepted(tracker)
    view = tracker.jobs["j1"]
    tracker.apply([Progress(job_id="j1", step=0, steps=100, phase="queued", queue_position=3)])
    assert view.state == "queued" and view.bar_text() == "queued · 3rd in line"
    assert "busy with other jobs" in view.phase_text() and view.summary() == view.phase_text()
    tracker.apply([Progress(job_id="j1", step=0, steps=100, phase="queued", queue_position=1)])
    assert view.phase_text() == "queued · next in line"
    tracker.apply([Progress(job_id="j1", step=0, steps=100, phase="loading_model")])
    assert view.state == "running" and view.bar_text() == "loading the model…"
    tracker.apply([Progress(job_id="j1", step=40, steps=100, phase="training", it_per_s=2.0, eta=30.0)])
    assert view.bar_text() == "40/100 · ETA 0:30" and view.phase_text() == ""
    # A place in line announced just as a worker took the job does not send it back to the queue.
    tracker.apply([Progress(job_id="j1", step=0, steps=100, phase="queued", queue_position=1)])
    assert view.state == "running" and view.step == 40
    tracker.apply([Progress(job_id="j1", step=100, steps=100, phase="extracting", eta=0.0)])
    assert view.bar_text() == "extracting the final mesh…" and view.it_per_s == 2.0
    tracker.apply([Finished(job_id="j1", step=100, mesh=_mesh())])
    assert view.state == "finished" and view.phase == "" and view.phase_text() == ""
