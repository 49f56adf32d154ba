"""Nothing is lost on a crash: SIGKILL in the middle of checkpoint writes, a truncated checkpoint, an emptied
job record; real `serve` processes on one data folder, restarted each time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blender_dreamfusion.shared import Deleted, Finished, Progress, Update
from blender_dreamfusion.shared.client import BackendClient
from tests.helpers.servers import ServeProcess, ended, events_until, tiny_spec

KILLS = 10


def _temporary_files(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "jobs").glob("*/*") if p.name.endswith(".tmp") or p.name.startswith(".tmp"))


def _kill_while_writing_a_checkpoint(server: ServeProcess, folder: Path, nth: int = 2,
                                     timeout: float = 120.0) -> None:
    """SIGKILL the server the moment its `nth` checkpoint write is under way (its temporary file exists); the
    writes before it complete, so the job moves on from one kill to the next."""
    deadline = time.monotonic() + timeout
    writes, writing = 0, False
    while time.monotonic() < deadline:
        now = any(p.name.startswith(("checkpoint.safetensors.", ".tmp")) and not p.name.endswith(".safetensors")
                  for p in folder.iterdir())
        if now and not writing:
            writes += 1
            if writes == nth:
                server.kill()
                return
        writing = now
        time.sleep(0.001)  # polling the folder for a write to begin; the kill itself is what is tested
    raise AssertionError(f"{writes} checkpoint writes seen in {timeout:g} s, waited for {nth}")


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_every_restart_sweeps_and_resumes(tmp_path, tiny_sd):
    data = tmp_path / "data"
    job, step = None, 0
    for kill in range(KILLS):
        server = ServeProcess(data)
        try:
            assert _temporary_files(data) == [], f"restart {kill} left the last crash's temporary files"
            with BackendClient(server.endpoint) as client:
                if job is None:
                    job = client.request(client.submit(tiny_spec(tiny_sd, steps=100_000, stream_every=2))).job_id
                else:
                    info = client.request(client.status(job)).jobs[0]
                    assert info.state == "interrupted" and info.step >= step, (kill, info)
                    step = info.step
                    assert client.request(client.resume(job)).TYPE == "accepted"
                _kill_while_writing_a_checkpoint(server, data / "jobs" / job)
        finally:
            if server.process.poll() is None:
                server.kill()
    assert step > 0  # the kills cost at most a checkpoint interval each: the job moved on through them
    server = ServeProcess(data)
    try:
        assert _temporary_files(data) == []
        with BackendClient(server.endpoint) as client:
            info = client.request(client.status(job)).jobs[0]
            assert info.state == "interrupted" and info.step >= step
            # An emptied record (a crash of a filesystem that lost the data but kept the rename) is listed, not
            # hidden, and deleting it frees its folder.
            (data / "jobs" / job / "job.json").write_bytes(b"")
    finally:
        assert server.stop() == 0
    server = ServeProcess(data)
    try:
        with BackendClient(server.endpoint) as client:
            listed = client.list_all()
            assert [(j.job_id, j.state) for j in listed] == [(job, "damaged")]
            assert str(data) not in listed[0].reason and "its folder on the backend" in listed[0].reason  # no path
            refused = client.request(client.resume(job))
            assert refused.TYPE == "rejected" and "damaged" in refused.reason
            deleted = client.request(client.delete(job))
            assert isinstance(deleted, Deleted) and deleted.freed_bytes > 0
            assert not (data / "jobs" / job).exists() and client.list_all() == []
    finally:
        assert server.stop() == 0
    assert str(data / "jobs" / job) in server.process.stderr.read()  # the operator's log does


@pytest.mark.slow
def test_a_truncated_checkpoint_resumes_from_the_one_before(tmp_path, tiny_sd):
    data = tmp_path / "data"
    server = ServeProcess(data)
    try:
        with BackendClient(server.endpoint) as client:
            job = client.request(client.submit(tiny_spec(tiny_sd, steps=40, stream_every=10))).job_id
            events_until(client, lambda e: isinstance(e, Update) and e.step >= 20, timeout=300)
    finally:
        assert server.stop() == 0  # graceful: the job is interrupted with a checkpoint at its last step
    folder = data / "jobs" / job
    current, previous = folder / "checkpoint.safetensors", folder / "checkpoint.prev.safetensors"
    assert previous.is_file()
    with open(current, "r+b") as f:  # half of it gone: what a full disk or a failing drive leaves
        f.truncate(current.stat().st_size // 2)
    server = ServeProcess(data)
    try:
        with BackendClient(server.endpoint) as client:
            assert client.request(client.resume(job)).TYPE == "accepted"
            events = events_until(client, ended(job), timeout=300)
    finally:
        assert server.stop() == 0
    steps = [e.step for e in events if isinstance(e, Progress) and e.phase == "training"]
    assert isinstance(events[-1], Finished) and events[-1].step == 40
    assert steps[0] > 10  # continued from the checkpoint before the damaged one (step 10 or later), not from 0
