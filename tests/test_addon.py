"""The extension as built by build_addon.py: zip contents, and register/unregister in the real `bpy` module."""

from __future__ import annotations

import importlib
import sys
import tomllib
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
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion") and hasattr(bpy.types.Scene, "dreamfusion")
    assert bpy.app.timers.is_registered(addon.client_loop.tick)
    addon.unregister()
    assert not hasattr(bpy.types, "VIEW3D_PT_dreamfusion") and not hasattr(bpy.types.Scene, "dreamfusion")
    assert not bpy.app.timers.is_registered(addon.client_loop.tick)
    addon.register()
    assert hasattr(bpy.types, "VIEW3D_PT_dreamfusion")
    assert bpy.ops.dreamfusion.generate.poll()


def test_vendored_protocol_is_the_addons_own_copy(addon):
    assert addon.panel.__name__ == "dreamfusion.panel"
    shared_copy = sys.modules["dreamfusion.shared"]
    assert Path(shared_copy.__file__).parent.parent == Path(addon.__file__).parent
    assert shared_copy.PROTOCOL_TAG == b"dreamfusion/1"


def test_scene_settings_mirror_the_jobspec_limits(addon):
    from shared.jobspec import jobspec_knobs

    addon.register()
    settings = bpy.context.scene.dreamfusion.settings
    props = settings.bl_rna.properties
    for name, knob in jobspec_knobs().items():
        if name in addon.properties.HIDDEN_FIELDS:
            continue
        prop = props[name]
        assert knob.help in prop.description, name
        if knob.kind in ("int", "float", "range"):
            assert prop.hard_min == pytest.approx(knob.minimum), name
            assert prop.hard_max == pytest.approx(min(knob.maximum, 2**31 - 1)), name
        if knob.kind == "choice":
            assert {item.identifier for item in prop.enum_items} == set(knob.choices), name
    # The default model is the built-in prior, so its recommended scene is what a new scene starts with.
    assert settings.model == "toy-shapes" and settings.background == "grey" and settings.render_resolution == 32
    settings.preset = "draft"
    assert settings.steps == 1000 and settings.mesh_resolution == 64


@pytest.mark.parametrize("flavour, python_tag, blender_max", [("py311", "cp311-cp311", "5.1.0"),
                                                                 ("py313", "cp312-abi3", None)])
def test_zip_has_manifest_vendored_shared_and_the_wheels_it_lists(tmp_path, flavour, python_tag, blender_max):
    zip_path = build_addon.build_zip(tmp_path, flavour)
    assert zip_path.name.endswith(f"-{flavour}.zip")
    archive = zipfile.ZipFile(zip_path)
    names = set(archive.namelist())
    assert {"blender_manifest.toml", "__init__.py", "panel.py", "operators.py", "client_loop.py",
            "shared/__init__.py", "shared/client.py", "shared/job_tracker.py", "shared/local_backend.py"} <= names
    assert not any("__pycache__" in n for n in names)
    manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert manifest["id"] == "dreamfusion" and manifest["blender_version_min"] == "4.2.0"
    assert manifest.get("blender_version_max") == blender_max
    assert manifest["type"] == "add-on" and set(manifest["permissions"]) == {"network", "files"}
    wheels = manifest["wheels"]
    for wheel in wheels:
        assert wheel.startswith("./wheels/") and wheel[2:] in names, wheel
        assert archive.getinfo(wheel[2:]).file_size > 100_000  # a real wheel, not a stub
        # Blender derives the extension's Python from the wheel tags: one zip must not mix them.
        assert wheel.split("/")[-1].startswith("pyzmq-27") and python_tag in wheel, wheel
    for platform in ("manylinux", "win_amd64", "universal2"):
        assert any(platform in w for w in wheels), platform
    assert set(manifest["platforms"]) == {"linux-x64", "windows-x64", "macos-arm64", "macos-x64"}
    # shared/ is imported relatively inside the add-on: no absolute `shared` imports may slip in.
    for name in names:
        if name.startswith("shared/") and name.endswith(".py"):
            text = archive.read(name).decode()
            assert "from shared" not in text and "import shared" not in text, name


def test_zip_without_wheels_lists_none(tmp_path):
    zip_path = build_addon.build_zip(tmp_path, None)
    manifest = tomllib.loads(zipfile.ZipFile(zip_path).read("blender_manifest.toml").decode())
    assert manifest["wheels"] == [] and "platforms" not in manifest


def test_a_scene_takes_the_default_model_until_one_is_chosen(addon):
    addon.register()
    scene = bpy.data.scenes.new("Another")
    try:
        settings = scene.dreamfusion.settings
        settings.model = "toy-shapes"  # chosen: the preference no longer applies
        assert not addon.properties.adopt_default_model(settings, "/models/sd21")
        fresh = bpy.data.scenes.new("Fresh").dreamfusion.settings
        assert addon.properties.adopt_default_model(fresh, "/models/sd21") and fresh.model == "/models/sd21"
        assert not addon.properties.adopt_default_model(fresh, "toy-shapes")  # now it counts as chosen
    finally:
        for name in ("Another", "Fresh"):
            bpy.data.scenes.remove(bpy.data.scenes[name])
