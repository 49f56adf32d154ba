"""Write files so a crash or a reader never sees half of one, and a power cut never leaves an empty one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

#: Temporary files end so; a server sweeps leftovers of a crash by this suffix.
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[str], None], keep_previous: str | Path | None = None) -> Path:
    """Call `write(tmp_path)`, then rename the finished file onto `path` (same folder, so the rename is atomic).

    The data is fsynced before the rename and the folder after it: without that, a crash soon after can leave
    `path` renamed but empty (the rename reaches the disk before the data). With `keep_previous`, the file that
    was at `path` is first renamed there, so a reader has a fallback if the new one is ever unreadable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; results are ordinary files, so honour the umask like open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def fsync_folder(folder: str | Path) -> None:
    """Make a rename or delete in `folder` durable (POSIX; Windows has no folder handles to sync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
