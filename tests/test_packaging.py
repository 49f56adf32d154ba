"""The wheel: one namespaced package (`blender_dreamfusion`), nothing under a generic top-level name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the package it installs as (pyproject.toml's package-dir).
INSTALLED_AS = {"backend": "blender_dreamfusion.backend", "shared": "blender_dreamfusion.shared",
                "blender_addon/addon_core": "blender_dreamfusion.addon_core"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source") / "repo"
    # A copy of what the build reads, so setuptools' build/ folder does not land in the checkout.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("backend", "shared", "blender_addon"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    # Offline with the setuptools that torch brings into the environment; isolated only if that one is too old.
    offline = ["--no-build-isolation"] if int(version("setuptools").split(".")[0]) >= 77 else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "--quiet",
                           "--disable-pip-version-check", "--wheel-dir", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (found,) = out.glob("blender_dreamfusion-*.whl")
    return found


def test_the_wheel_installs_one_namespaced_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"blender_dreamfusion"}, tops
    for generic in ("backend", "shared", "addon_core", "tests", "bench", "blender_addon"):
        assert generic not in tops
    # Every package of the three folders is in it (pyproject lists them; a new subpackage must be added).
    for folder, package in INSTALLED_AS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.relative_to(ROOT / folder).as_posix()
            assert f"{package.replace('.', '/')}/{relative}" in names, f"{folder}/{relative} is not packaged"
    assert "blender_dreamfusion/backend/toy/weights/unet/diffusion_pytorch_model.safetensors" in names
    assert "blender_dreamfusion/backend/toy/weights/model_index.json" in names
    assert "blender_dreamfusion/backend/toy/objects_weights/unet/diffusion_pytorch_model.safetensors" in names
    assert "blender_dreamfusion/backend/toy/objects_weights/model_index.json" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dreamfusion-backend = blender_dreamfusion.backend.cli:main" in \
        zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_runs_from_anywhere_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    # -S: no site processing, so this checkout's editable install (a .pth hook) is not seen; the
    # dependencies come from the environment's site-packages folder itself, the package from the wheel.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    code = ("import importlib.util, sys\n"
            "import blender_dreamfusion.shared as s, blender_dreamfusion.addon_core.job_tracker as j\n"
            "from blender_dreamfusion.backend.toy import WEIGHTS\n"
            "assert (WEIGHTS / 'model_index.json').is_file()\n"
            "assert all(importlib.util.find_spec(m) is None for m in ('backend', 'shared', 'addon_core'))\n"
            "print(s.__file__); print(j.__file__)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(line.startswith(str(target)) for line in done.stdout.split()), done.stdout
    done = subprocess.run([sys.executable, "-S", "-m", "blender_dreamfusion.backend.cli", "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "generate" in done.stdout, done.stderr[-2000:]


def test_pyproject_maps_the_folders_where_they_are():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert {package: folder for folder, package in INSTALLED_AS.items()} == setuptools["package-dir"]
    assert all(package.startswith("blender_dreamfusion.") for package in setuptools["packages"])
