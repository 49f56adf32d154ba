#!/usr/bin/env python3
"""Assemble the installable Blender extensions: blender_addon/ (with addon_core/) + a copy of shared/ + pyzmq wheels.

    python build_addon.py                 # -> dist/dreamfusion-<version>-py311.zip and -py313.zip
    python build_addon.py --no-wheels     # -> dist/dreamfusion-<version>.zip, for a Blender that has pyzmq

Each zip holds the add-on at its root with `shared/` vendored beside
`__init__.py` and `addon_core/` (which is why both may only use relative
imports) and pyzmq wheels under `wheels/`, listed in the manifest's `wheels`, for Linux
x86_64, Windows amd64 and macOS (universal2: arm64 and x86_64). Blender
installs only the wheel matching the machine.

There are two zips because Blender derives the Python versions an extension
runs on from its wheels' tags, and one zip mixing cp311 with abi3 wheels is
refused by a Python 3.13 Blender: `-py311` is for Blender 4.2-5.0 (Python
3.11), `-py313` (pyzmq's cp312-abi3 wheels) for Blender 5.1+ and Linux
distributions' Blenders built on Python 3.12 or newer. Wheels come from PyPI
with `pip download` and are cached in `build/wheels`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
SHARED = ROOT / "shared"
WHEEL_CACHE = ROOT / "build" / "wheels"
_SKIP = re.compile(r"(__pycache__|\.pyc$|\.pyo$)")

PYZMQ = "pyzmq==27.1.0"
#: (pip --platform, manifest platform names it serves)
PLATFORMS = (
    ("manylinux_2_28_x86_64", ("linux-x64",)),
    ("win_amd64", ("windows-x64",)),
    ("macosx_11_0_universal2", ("macos-arm64", "macos-x64")),
)
#: zip suffix -> (pip --python-version, manifest blender_version_max or None). Blender 4.2-5.0 embed
#: Python 3.11; 5.1+ embed 3.13 (pyzmq's cp312-abi3 wheels cover 3.12 and newer).
FLAVOURS = {"py311": ("3.11", "5.1.0"), "py313": ("3.13", None)}


def manifest_version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit("blender_addon/blender_manifest.toml has no version")
    return match.group(1)


def download_wheels(python: str, cache: Path = WHEEL_CACHE) -> list[Path]:
    """pyzmq wheels for every platform for one Python (cached; pip only runs for what is missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for platform, _ in PLATFORMS:
        found = _cached_wheel(cache, platform, python)
        if found is None:
            command = [sys.executable, "-m", "pip", "download", PYZMQ, "--only-binary=:all:", "--no-deps",
                       "--python-version", python, "--platform", platform, "--dest", str(cache),
                       "--quiet", "--disable-pip-version-check"]
            result = subprocess.run(command, capture_output=True, text=True)
            found = _cached_wheel(cache, platform, python)
            if result.returncode != 0 or found is None:
                raise SystemExit(f"pip download {PYZMQ} for {platform} / Python {python} failed:\n"
                                 f"{result.stderr.strip() or result.stdout.strip()}")
        if found not in wheels:
            wheels.append(found)
    return wheels


def _cached_wheel(cache: Path, platform: str, python: str) -> Path | None:
    version = PYZMQ.split("==")[1]
    tag = "cp311-cp311" if python == "3.11" else "cp312-abi3"
    arch = {"manylinux_2_28_x86_64": "manylinux*x86_64", "win_amd64": "win_amd64",
            "macosx_11_0_universal2": "macosx*universal2"}[platform]
    matches = sorted(cache.glob(f"pyzmq-{version}-{tag}-{arch}.whl"))
    return matches[0] if matches else None


def write_manifest(target: Path, wheels: list[Path], blender_max: str | None = None) -> None:
    """Fill in the manifest's `wheels` (and `platforms` when wheels are bundled, `blender_version_max`)."""
    path = target / "blender_manifest.toml"
    text = path.read_text(encoding="utf-8")
    if blender_max:
        text = re.sub(r'^(blender_version_min\s*=.*)$', rf'\1\nblender_version_max = "{blender_max}"', text,
                      flags=re.MULTILINE)
    listed = "".join(f'  "./wheels/{w.name}",\n' for w in wheels)
    text = re.sub(r"^wheels\s*=\s*\[[^\]]*\]", f"wheels = [\n{listed}]" if wheels else "wheels = []", text,
                  flags=re.MULTILINE)
    if wheels:
        names = ", ".join(f'"{name}"' for _, served in PLATFORMS for name in served)
        text = text.replace("\n# Tables last", f"\nplatforms = [{names}]\n\n# Tables last", 1)
    path.write_text(text, encoding="utf-8")


def assemble(target: Path, wheels: list[Path] = (), blender_max: str | None = None) -> Path:
    """Lay the extension out in `target` (created); return it. Tests import it from there."""
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    shutil.copytree(ADDON, target, ignore=ignore)
    shutil.copytree(SHARED, target / "shared", ignore=ignore)
    if wheels:
        (target / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, target / "wheels" / wheel.name)
    write_manifest(target, list(wheels), blender_max)
    return target


def build_zip(out_dir: Path, flavour: str | None = "py311", cache: Path = WHEEL_CACHE) -> Path:
    """One extension zip: `flavour` picks the bundled wheels (see FLAVOURS); None bundles none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{flavour}" if flavour else ""
    zip_path = out_dir / f"dreamfusion-{manifest_version()}{suffix}.zip"
    python, blender_max = FLAVOURS[flavour] if flavour else (None, None)
    wheels = download_wheels(python, cache) if flavour else []
    with tempfile.TemporaryDirectory() as tmp:
        tree = assemble(Path(tmp) / "dreamfusion", wheels, blender_max)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(tree.rglob("*")):
                if path.is_file() and not _SKIP.search(str(path)):
                    zf.write(path, path.relative_to(tree).as_posix())
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--no-wheels", action="store_true", help="leave out the pyzmq wheels")
    parser.add_argument("--wheel-cache", type=Path, default=WHEEL_CACHE, help="where downloaded wheels are kept")
    args = parser.parse_args(argv)
    for flavour in ([None] if args.no_wheels else list(FLAVOURS)):
        print(build_zip(args.out, flavour, cache=args.wheel_cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
