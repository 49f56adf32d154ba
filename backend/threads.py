"""How many CPU threads a job's torch may use: the cores this process may really run on, shared fairly.

Why the project sets this at all: torch's default is one OpenMP thread per core the machine has, and those threads
wait for each other at every parallel region. Alone on the machine more threads help (a toy step on 2 cores:
98 ms with 2 threads, 152 ms with 1); beside other work (Blender drawing, a second job, a compile) a thread that
lost its core holds up every region, and the step takes 700-990 ms with 2 threads against 151 ms with 1
(bench/threads.py; issue 33). So:

- the cores counted are those the process may use (its CPU affinity and any cgroup CPU quota, as in a container
  or a CI runner), not `os.cpu_count()`;
- a server's workers split them, and the add-on's local backend leaves Blender one (`reserve`);
- while a job trains, `ThreadGovernor` gives threads up when other processes keep cores busy, and takes them
  back when the cores are free again;
- `--threads N` (serve, generate) fixes the count.
OpenMP's passive waiting (OMP_WAIT_POLICY) was measured too and is not set: it made the busy case slower still.

One owner: every place that starts job code asks `ThreadPolicy` and passes the result on with `environment()`
(a child process) or `apply()` (this process), and trains under a `ThreadGovernor`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: The most threads anyone may ask for (`--threads`).
MAX_THREADS = 256


@dataclass(frozen=True)
class ThreadPolicy:
    """`threads`: a fixed count (None: derived from the usable cores); `workers`: jobs that train at once and share
    the cores; `reserve`: cores left to other work on the machine (the add-on leaves Blender one)."""

    threads: int | None = None
    workers: int = 1
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads: {self.threads} is out of range; allowed: 1 to {MAX_THREADS}")
        if not 1 <= self.workers <= MAX_THREADS:
            raise ValueError(f"workers: {self.workers} is out of range; allowed: 1 to {MAX_THREADS}")
        if not 0 <= self.reserve <= MAX_THREADS:
            raise ValueError(f"reserve: {self.reserve} is out of range; allowed: 0 to {MAX_THREADS}")

    def threads_per_job(self) -> int:
        if self.threads is not None:
            return self.threads
        return max(1, (usable_cores() - self.reserve) // self.workers)

    def environment(self, count: int | None = None) -> dict[str, str]:
        """What a process that will run jobs needs in its environment (set before it imports torch)."""
        count = str(count or self.threads_per_job())
        return {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count}

    def arguments(self) -> list[str]:
        """The policy as a job process's command-line flags (`job_process.py` rebuilds it from them)."""
        fixed = ["--threads", str(self.threads)] if self.threads is not None else []
        return [*fixed, "--workers", str(self.workers), "--reserve-cores", str(self.reserve)]

    def apply(self) -> int:
        """Use the policy in this process: the environment for anything it starts and for OpenMP if it has not
        loaded yet, and torch's intra-op threads now. Returns the thread count."""
        count = self.threads_per_job()
        os.environ.update(self.environment(count))
        import torch

        torch.set_num_threads(count)
        return count


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (rounded down, at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity call
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), None without one."""
    for path in _own_cgroup_dirs(root):
        try:
            quota, period = (path / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                return float(quota) / float(period)
            return None
        except (OSError, ValueError):
            pass
        try:
            quota_us = float((path / "cpu.cfs_quota_us").read_text())
            period_us = float((path / "cpu.cfs_period_us").read_text())
            if quota_us > 0 and period_us > 0:
                return quota_us / period_us
            return None
        except (OSError, ValueError):
            pass
    return None


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """Candidate folders of this process's cgroup: its own (from /proc/self/cgroup), then the mount's root (a
    container usually sees its own cgroup there)."""
    dirs = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                base = root if controllers == "" else root / controllers
                dirs.append(base / path.lstrip("/"))
    except (OSError, ValueError):
        pass
    dirs += [root, root / "cpu", root / "cpu,cpuacct"]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def add_thread_arguments(parser: argparse.ArgumentParser, workers: bool = False) -> None:
    """`--threads` (and for a server `--reserve-cores`) on a command that runs jobs."""
    split = " split between the workers" if workers else ""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads per job (default: the cores this process may use{split}, "
                             f"{usable_cores()} here, less --reserve-cores)" if workers else
                             f"CPU threads (default: the cores this process may use, {usable_cores()} here)")
    if workers:
        parser.add_argument("--reserve-cores", type=int, default=0, metavar="N",
                            help="cores to leave to other work on this machine (the add-on's local backend leaves "
                                 "Blender 1; default 0)")


def check_thread_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ThreadPolicy:
    """The policy the flags ask for, or a usage error naming the flag and its range."""
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads: {args.threads} is out of range; allowed: 1 to {MAX_THREADS}")
    reserve = getattr(args, "reserve_cores", 0)
    if not 0 <= reserve <= MAX_THREADS:
        parser.error(f"--reserve-cores: {reserve} is out of range; allowed: 0 to {MAX_THREADS}")
    return ThreadPolicy(args.threads, max(1, min(MAX_THREADS, getattr(args, "workers", 1))), reserve)


#: How often the governor looks at the machine (seconds), and how much of a core others must use before a
#: job gives up a thread (hysteresis: a core that others use 30 % of the time is still worth a thread).
GOVERN_EVERY = 2.0
GIVE_UP_AT = 0.7


class ThreadGovernor:
    """Adjusts this process's torch threads while a job trains: the policy's count when the cores are free, fewer
    when other processes keep some of them busy (Blender drawing, another job, a compile).

    Measured (bench/threads.py, 2 cores, toy step): alone, 2 threads step in 98 ms against 152 ms for one; beside
    one busy process 2 threads take 700-990 ms and one thread 151 ms, because a thread that lost its core stalls
    every parallel region. So the count follows the cores that are free now: the busy time of the process's CPUs
    (/proc/stat, steal included) less its own (/proc/self/stat). Linux only; elsewhere the count stays fixed.
    `tick()` is called between steps and costs two small file reads every GOVERN_EVERY seconds."""

    def __init__(self, policy: ThreadPolicy, clock=time.monotonic):
        self.most = policy.threads_per_job()
        self.cores = usable_cores()  # what is free is counted on all of them: another worker's job is "others"
        self.fixed = policy.threads is not None  # asked for explicitly: the operator decides
        self.clock = clock
        self.threads = self.most
        self.changes = 0
        try:
            self._cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self._cpus = []
        self._last = self._sample()

    def tick(self) -> int:
        """Look at the machine if it is time, and set torch's threads if the free cores changed. Returns them."""
        if self.fixed or self.most == 1 or self._last is None:
            return self.threads
        now = self.clock()
        if now - self._last[0] < GOVERN_EVERY:
            return self.threads
        sample = self._sample()
        if sample is None:
            return self.threads
        others = others_busy(self._last, sample)
        self._last = sample
        wanted = max(1, min(self.most, math.floor(self.cores - others + (1.0 - GIVE_UP_AT))))
        if wanted != self.threads:
            import torch

            torch.set_num_threads(wanted)
            self.threads, self.changes = wanted, self.changes + 1
        return self.threads

    def _sample(self) -> tuple[float, float, float] | None:
        """(time, busy ticks of this process's CPUs, this process's own ticks), or None where /proc is absent."""
        try:
            busy = 0.0
            wanted = {f"cpu{n}" for n in self._cpus}
            with open("/proc/stat") as stat:
                for line in stat:
                    fields = line.split()
                    if fields and fields[0] in wanted:
                        user, nice, system, _idle, _iowait, irq, softirq, steal = (float(v) for v in fields[1:9])
                        busy += user + nice + system + irq + softirq + steal
            with open("/proc/self/stat") as own:
                after_name = own.read().rsplit(")", 1)[1].split()
            mine = float(after_name[11]) + float(after_name[12])  # utime, stime (all threads)
        except (OSError, ValueError, IndexError):
            return None
        return self.clock(), busy, mine


def others_busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores other processes kept busy between two samples (`ThreadGovernor._sample`)."""
    seconds = after[0] - before[0]
    if seconds <= 0:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / ticks / seconds)
