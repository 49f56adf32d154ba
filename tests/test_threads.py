"""The thread policy (backend/threads.py): the cores a process may use, shared between workers and with Blender,
and the flags that set it, checked at the edge."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from blender_dreamfusion.backend import threads
from blender_dreamfusion.backend.threads import ThreadPolicy, cgroup_cpu_quota


def test_the_usable_cores_follow_the_process_affinity():
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a Linux machine with two cores or more")
    code = ("import os, json; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from blender_dreamfusion.backend.threads import ThreadPolicy, usable_cores; "
            "print(json.dumps([usable_cores(), ThreadPolicy().threads_per_job(), os.cpu_count()]))")
    usable, per_job, machine = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                         text=True, check=True).stdout)
    assert usable == per_job == 1 and machine >= 2  # not os.cpu_count()


@pytest.mark.parametrize("text, cores", [("150000 100000\n", 1.5), ("max 100000\n", None), ("400000 100000", 4.0)])
def test_a_cgroup_v2_quota_caps_the_cores(tmp_path, text, cores):
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_cpu_quota(tmp_path) == cores


def test_a_cgroup_v1_quota_caps_the_cores(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


@pytest.mark.parametrize("policy, expected", [
    (ThreadPolicy(), 8), (ThreadPolicy(workers=2), 4), (ThreadPolicy(workers=3), 2), (ThreadPolicy(reserve=1), 7),
    (ThreadPolicy(workers=16), 1), (ThreadPolicy(reserve=8), 1), (ThreadPolicy(threads=3, workers=4), 3)])
def test_workers_split_the_cores_and_a_reserve_is_left_to_other_work(monkeypatch, policy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert policy.threads_per_job() == expected
    assert policy.environment() == {"OMP_NUM_THREADS": str(expected), "MKL_NUM_THREADS": str(expected)}


@pytest.mark.parametrize("field, value", [("threads", 0), ("threads", 10_000), ("workers", 0), ("reserve", -1)])
def test_a_policy_out_of_range_names_its_field(field, value):
    with pytest.raises(ValueError, match=f"{field}: {value} is out of range; allowed"):
        ThreadPolicy(**{field: value})


@pytest.mark.parametrize("argv, flag", [(["serve", "--threads", "0"], "--threads"),
                                        (["serve", "--reserve-cores", "-1"], "--reserve-cores"),
                                        (["generate", "a red cube", "--threads", "999"], "--threads")])
def test_the_flags_are_checked_where_they_enter(argv, flag):
    result = subprocess.run([sys.executable, "-m", "blender_dreamfusion.backend.cli", *argv], capture_output=True,
                            text=True)
    assert result.returncode == 2 and f"{flag}: " in result.stderr and "allowed: " in result.stderr, result.stderr


def test_the_addons_local_backend_leaves_blender_a_core():
    from blender_dreamfusion.addon_core.local_backend import LocalBackend

    command = LocalBackend(["dreamfusion-backend"]).command
    assert command[command.index("--reserve-cores") + 1] == "1"


def test_a_policy_travels_to_a_job_process_as_flags():
    assert ThreadPolicy().arguments() == ["--workers", "1", "--reserve-cores", "0"]
    assert ThreadPolicy(3, 2, 1).arguments() == ["--threads", "3", "--workers", "2", "--reserve-cores", "1"]


def test_others_busy_is_the_cpus_busy_time_less_our_own():
    ticks = os.sysconf("SC_CLK_TCK")
    # Over 2 s the process's CPUs were busy 3 core-seconds, 1 of them ours: others kept one core busy.
    assert threads.others_busy((10.0, 0.0, 0.0), (12.0, 3.0 * ticks, 1.0 * ticks)) == pytest.approx(1.0)
    assert threads.others_busy((10.0, 0.0, 0.0), (12.0, 1.0 * ticks, 1.0 * ticks)) == 0.0


def test_the_governor_gives_a_thread_up_beside_a_busy_process_and_takes_it_back(monkeypatch):
    import time

    import torch

    if threads.usable_cores() < 2 or not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux and two usable cores")
    monkeypatch.setattr(threads, "GOVERN_EVERY", 0.5)
    before = torch.get_num_threads()
    policy = ThreadPolicy(threads=None, workers=1, reserve=threads.usable_cores() - 2)  # a 2-thread job
    governor = threads.ThreadGovernor(policy)
    assert governor.most == 2 and not governor.fixed
    governor.cores = 2  # as on a 2-core machine, whatever this one has
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 20
        while governor.tick() != 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # sampling the machine: the governor measures over wall time
        assert governor.threads == 1 and torch.get_num_threads() == 1
    finally:
        spinner.kill()
        spinner.wait()
    try:
        deadline = time.monotonic() + 20
        while governor.tick() != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert governor.threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_count_asked_for_is_never_changed():
    governor = threads.ThreadGovernor(ThreadPolicy(threads=2))
    governor._last = (0.0, 0.0, 0.0)  # as if the machine had been fully busy since long ago
    assert governor.tick() == 2 and governor.changes == 0


def test_another_workers_job_is_no_reason_to_give_threads_up(monkeypatch):
    """4 cores, 2 workers: each job's share is 2; the other job keeping 2 cores busy leaves this one its 2."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    governor = threads.ThreadGovernor(ThreadPolicy(workers=2))
    ticks = os.sysconf("SC_CLK_TCK")
    busy = iter([(100.0, 2.0 * 2 * ticks, 0.0), (102.0, 2.0 * 2 * ticks + 4.0 * ticks, 0.0)])
    monkeypatch.setattr(governor, "_sample", lambda: next(busy))
    governor._last = governor._sample()
    governor.clock = lambda: 103.0
    assert governor.tick() == 2  # others: 2 cores busy over 2 s; 4 - 2 leaves this job its 2
