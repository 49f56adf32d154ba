"""A plain server's job process: `python -m blender_dreamfusion.backend.server.job_process --port N`.

It runs jobs one at a time as a `JobHost` and sends their reports up the pipe it was given (`job_pipe.py`); the
server (`process_runner.py`) applies them. Why a process and not a thread of the server: a job may sit for
minutes in native code that holds Python's GIL (libigl on a hostile start mesh, a huge bake), crash in a native
library, or keep memory the allocator never gives back; in its own process none of that reaches the server's
loop, and the server can always end it.

What the server sends: ("run", payload), ("cancel", run), ("pick", run, candidate), ("stop",), ("quit",). What
it answers: ("hello", version, pid) once, then each run's reports and ("done", resident bytes after the run).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import signal
import socket
import sys
import threading
import traceback

from blender_dreamfusion.shared import __version__

from ..threads import ThreadPolicy
from .job_host import JobHost
from .job_pipe import SECRET_VARIABLE, JobPipe, PipeClosed

#: Seconds a job has to wind down once its server is gone (the pipe closed) before the process ends anyway.
ORPHAN_GRACE = 10.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="job_process", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True,
                        help=f"the server's loopback port to connect back to (the secret is in ${SECRET_VARIABLE})")
    # The server's ThreadPolicy, rebuilt here (same machine, same affinity): one derivation of the thread count.
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per job (default: derived)")
    parser.add_argument("--workers", type=int, default=1, help="jobs the server trains at once")
    parser.add_argument("--reserve-cores", type=int, default=0, help="cores left to other work")
    args = parser.parse_args(argv)
    # Ctrl-C in the terminal reaches the whole process group: the server decides when its jobs stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the server died before the line above took effect
        return
    secret = os.environ.pop(SECRET_VARIABLE, "")  # not passed on to anything this process starts
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(secret.encode())
    pipe = JobPipe(sock)
    threads = ThreadPolicy(args.threads, args.workers, args.reserve_cores)
    threads.apply()
    host = JobHost(threads)
    _warm_up()
    try:
        pipe.send(("hello", __version__, os.getpid()))
    except PipeClosed:  # the server stopped (or gave up on us) while we warmed up: nothing to say, nothing to do
        os._exit(0)
    runner: threading.Thread | None = None
    while True:
        try:
            command = pipe.recv()
        except PipeClosed:  # the server is gone: stop the job as a server stop would, then end
            host.stop()
            break
        kind = command[0]
        if kind == "run":
            runner = threading.Thread(target=_run, args=(pipe, host, command[1]), name="job-run", daemon=True)
            runner.start()
        elif kind == "cancel":
            host.cancel(str(command[1]))
        elif kind == "pick":
            host.pick(str(command[1]), int(command[2]))
        elif kind == "stop":
            host.stop()
        elif kind == "quit":
            break
    if runner is not None:
        runner.join(ORPHAN_GRACE)
    pipe.close()
    os._exit(0)  # daemon threads (a job stuck in native code) must not hold the exit


def _warm_up() -> None:
    """Import what every job needs before the first one comes (the server starts this process ahead of its first
    job): seconds of imports that would otherwise fall between a submit and its first mesh."""
    try:
        from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel  # noqa: F401
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

        from . import worker  # noqa: F401 - the trainer, geometries, priors and exporters behind it
    except Exception:  # noqa: BLE001 - a job that needs a missing piece says so itself
        traceback.print_exc()
    _freeze()


def _freeze() -> None:
    """What lives now (modules, a loaded prior) lives as long as the process: take it out of the collector's
    sight, so each job's collection scans only that job's objects (milliseconds instead of 0.17 s a job with
    diffusers and transformers loaded)."""
    gc.collect()
    gc.freeze()


def _run(pipe: JobPipe, host: JobHost, payload: dict) -> None:
    try:
        for report in host.run(payload):
            pipe.send(report)
    except PipeClosed:
        os._exit(1)  # nobody left to report to
    except Exception:  # noqa: BLE001 - a report that cannot be sent: the server sees the run end unfinished
        traceback.print_exc()
    _give_memory_back()
    try:
        pipe.send(("done", _resident_bytes()))
    except PipeClosed:
        os._exit(1)


def _give_memory_back() -> None:
    """The finished job's tensors and arrays are garbage now: free them, and hand the freed heap back to the
    system (glibc keeps it otherwise), so a warm process between jobs holds its prior and little more."""
    _freeze()  # the job's garbage goes; its prior, kept for the next job, joins what is never scanned again
    from .worker import torch_cleanup

    torch_cleanup()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the server dies, even mid-way through native code. Elsewhere
    the closed pipe ends it once its job returns to Python."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


if __name__ == "__main__":
    main()
