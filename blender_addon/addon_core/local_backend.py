"""Start and stop a backend on this machine (`dreamfusion-backend serve`) without ever waiting on it.

The add-on's "local" mode and headless batch runs use this. The backend
binds port 0 on loopback (so two Blenders never fight over a port) and
prints where it listens; that line is read from its log file, so nothing
here blocks on a pipe.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

_LISTENING = re.compile(r"listening on (tcp://127\.0\.0\.1:\d+)")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


class LocalBackendError(RuntimeError):
    """The backend could not be started or stopped; the message says what to fix."""


def allowed_folders(paths: Iterable[str]) -> list[str]:
    """The existing folders among `paths` (blank entries and files dropped, each once, `~` expanded): what a local
    backend is started with as `--allow-path`, so a model folder named in the preferences can be used."""
    out: list[str] = []
    for text in paths:
        folder = Path(text.strip()).expanduser() if text and text.strip() else None
        if folder is not None and folder.is_dir() and str(folder) not in out:
            out.append(str(folder))
    return out


def split_folders(text: str) -> list[str]:
    """A preference holding several folders, separated by ';' (or the platform's path separator)."""
    return [part.strip() for part in re.split(rf"[;{re.escape(os.pathsep)}]", text or "") if part.strip()]


def backend_command(executable: str = "") -> list[str]:
    """The command that runs the backend CLI.

    `executable` may be the `dreamfusion-backend` script or a Python interpreter with the backend installed
    (e.g. a venv's bin/python); empty means `dreamfusion-backend` on PATH.
    """
    path = executable.strip()
    if not path:
        found = shutil.which("dreamfusion-backend")
        if not found:
            raise LocalBackendError("no backend configured: set the add-on preference 'Backend executable' to the "
                                    "dreamfusion-backend script (or the Python) of the environment where the "
                                    "backend is installed")
        return [found]
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise LocalBackendError(f"backend executable {path!r} does not exist")
    if _PYTHON.match(resolved.name):
        return [str(resolved), "-m", "blender_dreamfusion.backend.cli"]
    return [str(resolved)]


class LocalBackend:
    def __init__(self, command: list[str], *, data_dir: str = "", device: str = "auto", heartbeat: float = 2.0,
                 log_path: Path | None = None, allow_paths: Iterable[str] = ()):
        self.command = [*command, "serve", "--bind", "tcp://127.0.0.1:0", "--device", device,
                        "--heartbeat", f"{heartbeat:g}", "--parent-pid", str(os.getpid()),
                        # Blender draws and computes beside the job: its threads spinning on a core Blender
                        # wants would slow both (backend/threads.py).
                        "--reserve-cores", "1"]
        if data_dir:
            self.command += ["--data-dir", str(Path(data_dir).expanduser())]
        # The backend reads local models and checkpoints only from folders it is told about.
        for folder in allowed_folders(allow_paths):
            self.command += ["--allow-path", folder]
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"dreamfusion-backend-{os.getpid()}.log"
        self.process: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.started_at = 0.0

    def start(self) -> None:
        if self.running:
            return
        self.endpoint = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # The child keeps its own copy of the log handle; ours can close straight away.
            flags = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32" \
                else {"start_new_session": True}  # a Ctrl-C in Blender's terminal is Blender's, not the backend's
            try:
                self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, **flags)
            except OSError as exc:
                raise LocalBackendError(f"cannot start {self.command[0]!r}: {exc}") from None
        self.started_at = time.monotonic()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def poll_endpoint(self) -> str | None:
        """Where the backend listens, once it has said so (a cheap read of its log); None until then."""
        if self.endpoint is None and self.process is not None:
            match = _LISTENING.search(self.log_text())
            if match:
                self.endpoint = match[1]
        return self.endpoint

    def log_text(self, tail_bytes: int = 16384) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - tail_bytes))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the backend checkpoints its jobs as interrupted), then kill if it does not exit in time."""
        process, self.process, self.endpoint = self.process, None, None
        if process is None or process.poll() is not None:
            return
        if sys.platform == "win32":
            process.terminate()
        else:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
