"""Installing the built extension into the chrooted real Blender and running it there (tests and docs shots)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_addon  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent / "real_blender"


@dataclass
class Installed:
    root: Path    # the chroot
    inside: Path  # a fresh folder as Blender sees it (/tmp/dreamfusion-test-…)
    host: Path    # the same folder from outside
    env: dict


def install_extension(root: Path) -> Installed:
    """Build the -py313 zip (Debian's Blender embeds Python 3.13) and install it with Blender's own
    `extension install-file`, into a fresh user folder (BLENDER_USER_RESOURCES)."""
    inside = Path("/tmp") / f"dreamfusion-test-{uuid.uuid4().hex[:8]}"
    host = root / inside.relative_to("/")
    host.mkdir(parents=True)
    zip_path = build_addon.build_zip(host, "py313")
    for script in SCRIPTS.glob("*.py"):
        shutil.copy(script, host / script.name)
    env = {"HOME": str(inside / "home"), "BLENDER_USER_RESOURCES": str(inside / "user"),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    place = Installed(root, inside, host, env)
    done = chroot_run(place, ["blender", "-b", "--command", "extension", "install-file", "-r", "user_default",
                              "-e", str(inside / zip_path.name)], timeout=300)
    output = done.stdout + done.stderr
    if done.returncode != 0 or 'Installed "dreamfusion"' not in done.stdout or "Error" in output:
        raise AssertionError(f"extension install-file failed:\n{output[-3000:]}")
    return place


def chroot_run(place: Installed, command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(place.root), "env", "-i", *(f"{k}={v}" for k, v in place.env.items()),
                           *command], capture_output=True, text=True, timeout=timeout)
