"""Running a real backend for tests: in-process (a thread) or as the `serve` command (a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from blender_dreamfusion.backend.server.service import Server, ServerConfig
from blender_dreamfusion.shared import JobSpec, Message
from blender_dreamfusion.shared.client import BackendClient, CurveKeys

SCRIPT = Path(sys.executable).with_name("dreamfusion-backend")
#: Tests keep their tiny models and checkpoints under the temp folder; the servers they start allow it.
TEMP_ROOT = Path(tempfile.gettempdir())


def tiny_spec(model: Path, **overrides) -> JobSpec:
    values = dict(prompt="a red cube", model=str(model), steps=30, stream_every=5, render_resolution=32,
                  mesh_resolution=32, seed=1)
    values.update(overrides)
    return JobSpec(**values)


def two_clients_keys(keys: Path) -> tuple[CurveKeys, CurveKeys]:
    """Keys for a CURVE server in `keys` (`keys generate`) and its two clients, alice and bob."""
    from blender_dreamfusion.backend.cli import main

    assert main(["keys", "generate", str(keys), "--client", "alice", "--client", "bob"]) == 0
    return tuple(CurveKeys.from_files(keys / "server.key", keys / "clients" / f"{name}.key_secret")
                 for name in ("alice", "bob"))


class ThreadServer:
    """A Server running its loop in a thread; `stop()` joins it."""

    def __init__(self, data_dir: Path, **config):
        config.setdefault("bind", "tcp://127.0.0.1:0")
        config.setdefault("device", "cpu")
        config.setdefault("heartbeat_interval", 1.0)
        config.setdefault("allow_paths", (TEMP_ROOT,))
        self.server = Server(ServerConfig(data_dir=data_dir, **config))
        self.endpoint = self.server.endpoint
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the server loop did not stop"


class ServeProcess:
    """`dreamfusion-backend serve` in a subprocess; the endpoint is read from its first line."""

    def __init__(self, data_dir: Path, *extra: str, timeout: float = 120.0):
        self.process = subprocess.Popen(
            [str(SCRIPT), "serve", "--bind", "tcp://127.0.0.1:0", "--data-dir", str(data_dir), "--device", "cpu",
             "--heartbeat", "1", "--allow-path", str(TEMP_ROOT), *extra], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # blocks until the server prints where it listens (or dies)
        match = re.search(r"listening on (tcp://[0-9.:]+)", line)
        if not match:
            self.process.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.process.stderr.read()}")
        self.endpoint = match[1]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=120)


def events_until(client: BackendClient, done, timeout: float = 120.0) -> list[Message]:
    """Poll until `done(event)` is true for one event (returned last) or the deadline passes."""
    deadline = time.monotonic() + timeout
    seen: list[Message] = []
    while time.monotonic() < deadline:
        for event in client.poll(0.2):
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"timed out after {timeout:g} s; saw {', '.join(map(describe, seen))}")


def describe(event: Message) -> str:
    """One event in a line short enough to list dozens in a failure: its type, job, step and phase."""
    parts = [getattr(event, "job_id", "")[:8], getattr(event, "step", ""), getattr(event, "phase", "")]
    if getattr(event, "queue_position", 0):
        parts.append(f"#{event.queue_position}")
    return f"{event.TYPE}({' '.join(str(p) for p in parts if p != '')})"


def ended(job_id: str):
    return lambda e: e.TYPE in ("finished", "failed", "cancelled") and getattr(e, "job_id", None) == job_id


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it returns something true (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling a condition with a deadline, not waiting for an event to have happened
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def job_processes(pid: int) -> list[int]:
    """The job processes among the children of a server's process `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended between the listing and the read (a server's threads come and go)
            continue
        for child in children:
            try:
                # The module's full name: a child forked but not yet exec'd shows the test run's own command line,
                # which may name tests/test_job_processes.py.
                if b"blender_dreamfusion.backend.server.job_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:  # ended meanwhile
                pass
    return found


def resident_bytes(pid: int) -> int:
    """A process's resident memory now (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
