"""Installing the built extension into the chrooted real Blender and running it there (tests and docs shots)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import build_addon  # noqa: E402

SCRIPTS = ROOT / "tests" / "real_blender"
#: Blender with a window, on a virtual screen (Xvfb runs no window manager: window and screen coordinates agree).
WINDOWED_BLENDER = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "blender", "--python"]


def make_blender_root(root: Path | None = None, timeout: float = 1800) -> Path:
    """The Debian root holding the real Blender (`scripts/blender-root.sh`, cached after the first build).
    RuntimeError with the script's output when it cannot be made (not root, no mirror)."""
    command = ["bash", str(ROOT / "scripts" / "blender-root.sh"), *([str(root)] if root else [])]
    made = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if made.returncode != 0:
        raise RuntimeError(f"scripts/blender-root.sh failed: {made.stderr[-2000:]}")
    return Path(made.stdout.strip().splitlines()[-1])


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


def run_windowed(place: Installed, script: str, *args: str, out: str, timeout: float) -> dict:
    """One of `real_blender/`'s scripts in Blender with a window; the JSON it wrote to `out`.json in the install
    folder, or {"error": the tail of Blender's output} when it wrote none."""
    done = chroot_run(place, [*WINDOWED_BLENDER, str(place.inside / script), "--", *args], timeout=timeout)
    written = place.host / f"{out}.json"
    if written.exists():
        return json.loads(written.read_text())
    return {"error": f"{script} wrote no {out}.json:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"}


def chroot_run(place: Installed, command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(place.root), "env", "-i", *(f"{k}={v}" for k, v in place.env.items()),
                           *command], capture_output=True, text=True, timeout=timeout)
