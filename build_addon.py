#!/usr/bin/env python3
"""Assemble the installable Blender extension: blender_addon/ + a copy of shared/ (+ wheels).

    python build_addon.py            # -> dist/dreamfusion-<version>.zip

The zip holds the add-on at its root with `shared/` vendored beside
`__init__.py`, which is why `shared/` may only use relative imports.
Bundling the pyzmq wheels for every platform arrives with the add-on issue;
until then the zip installs but cannot talk to a backend.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
SHARED = ROOT / "shared"
_SKIP = re.compile(r"(__pycache__|\.pyc$|\.pyo$)")


def manifest_version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit("blender_addon/blender_manifest.toml has no version")
    return match.group(1)


def assemble(target: Path) -> Path:
    """Lay the extension out in `target` (created); return it. Tests import it from there."""
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    shutil.copytree(ADDON, target, ignore=ignore)
    shutil.copytree(SHARED, target / "shared", ignore=ignore)
    return target


def build_zip(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"dreamfusion-{manifest_version()}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        tree = assemble(Path(tmp) / "dreamfusion")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(tree.rglob("*")):
                if path.is_file() and not _SKIP.search(str(path)):
                    zf.write(path, path.relative_to(tree).as_posix())
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build_zip(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
