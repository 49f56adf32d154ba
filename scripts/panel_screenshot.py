#!/usr/bin/env python3
"""Take docs/panel.png: the DreamFusion sidebar mid-job in the real Blender (chroot from blender-root.sh, Xvfb).

    sudo .venv/bin/python scripts/panel_screenshot.py [--prompt "a blue torus"] [--at 300]

Runs a backend here on the built-in toy-shapes prior, installs the built
extension into the chrooted Blender, presses Generate there and shoots the
screen once the job passes step --at.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.real_blender import install_extension, make_blender_root, run_windowed  # noqa: E402
from tests.helpers.servers import ServeProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a blue torus")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--at", type=int, default=300, help="take the shot once the job passes this step")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "panel.png")
    args = parser.parse_args()
    try:
        place = install_extension(make_blender_root())
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as jobs:
        backend = ServeProcess(Path(jobs))
        try:
            result = run_windowed(place, "panel_screenshot.py", backend.endpoint, "toy-shapes", args.prompt,
                                  str(args.steps), str(args.at), str(place.inside / "panel"), out="panel",
                                  timeout=1800)
        finally:
            backend.stop()
    print(json.dumps(result, indent=1))
    if "error" in result:
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(place.host / "panel.png", args.out)
    shutil.rmtree(place.host, ignore_errors=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
