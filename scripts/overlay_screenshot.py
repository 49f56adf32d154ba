#!/usr/bin/env python3
"""Take docs/overlay_off.png and docs/overlay_on.png: the viewport without and with the sampling overlay,
in the real Blender (chroot from blender-root.sh, Xvfb), at the default camera and light ranges.

    sudo .venv/bin/python scripts/overlay_screenshot.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.real_blender import install_extension, make_blender_root, run_windowed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    try:
        place = install_extension(make_blender_root())
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    result = run_windowed(place, "overlay_screenshot.py", str(place.inside / "overlay"), out="overlay", timeout=300)
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
