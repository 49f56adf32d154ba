#!/usr/bin/env python3
"""Take docs/overlay_off.png and docs/overlay_on.png: the viewport without and with the sampling overlay,
in the real Blender (chroot from blender-root.sh, Xvfb), at the default camera and light ranges.

    sudo .venv/bin/python scripts/overlay_screenshot.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.real_blender_helpers import chroot_run, install_extension  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    made = subprocess.run(["bash", str(ROOT / "scripts" / "blender-root.sh")], capture_output=True, text=True)
    if made.returncode != 0:
        print(made.stderr, file=sys.stderr)
        return 1
    place = install_extension(Path(made.stdout.strip().splitlines()[-1]))
    done = chroot_run(place, ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "blender", "--python",
                              str(place.inside / "overlay_screenshot.py"), "--", str(place.inside / "overlay")],
                      timeout=300)
    result_file = place.host / "overlay.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {"error": done.stderr[-3000:]}
    print(json.dumps(result, indent=1))
    if "error" in result:
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("off", "on"):
        shutil.copy(place.host / f"overlay_{name}.png", args.out / f"overlay_{name}.png")
        print(args.out / f"overlay_{name}.png")
    shutil.rmtree(place.host, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
