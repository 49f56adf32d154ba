"""The assembled extension loads in the real `bpy` module with the vendored protocol package."""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_addon  # noqa: E402


@pytest.fixture
def addon(tmp_path, monkeypatch):
    build_addon.assemble(tmp_path / "dreamfusion")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "dreamfusion" or m.startswith("dreamfusion.")]:
        del sys.modules[name]
    module = importlib.import_module("dreamfusion")
    yield module
    if hasattr(bpy.types, "VIEW3D_PT_dreamfusion"):
        module.unregister()


def test_register_unregister_register(addon):
    addon.register()
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
    addon.unregister()
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
    addon.register()
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion")


def test_vendored_protocol_is_the_addons_own_copy(addon):
    assert addon.panel.__name__ == "dreamfusion.panel"
    shared_copy = sys.modules["dreamfusion.shared"]
    assert Path(shared_copy.__file__).parent.parent == Path(addon.__file__).parent
    assert shared_copy.PROTOCOL_TAG == b"dreamfusion/1"


def test_zip_has_manifest_init_and_vendored_shared(tmp_path):
    zip_path = build_addon.build_zip(tmp_path)
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"blender_manifest.toml", "__init__.py", "panel.py", "shared/__init__.py", "shared/framing.py"} <= names
    assert not any("__pycache__" in n for n in names)
    manifest = zipfile.ZipFile(zip_path).read("blender_manifest.toml").decode()
    assert 'id = "dreamfusion"' in manifest and 'blender_version_min = "4.2.0"' in manifest
