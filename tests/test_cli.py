"""`dreamfusion-backend`: working verbs and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blender_dreamfusion.backend.cli import main

SCRIPT = Path(sys.executable).with_name("dreamfusion-backend")


def test_console_script_is_installed_and_prints_versions():
    out = subprocess.run([str(SCRIPT), "version"], capture_output=True, text=True, check=True)
    assert "protocol dreamfusion/1" in out.stdout


def test_spec_prints_a_validated_spec(capsys):
    assert main(["spec", "a red cube", "--preset", "draft", "--steps", "321", "--camera-radius", "2", "3",
                 "--no-view-dependent", "--seed", "9"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["steps"] == 321 and spec["camera_radius"] == [2.0, 3.0] and spec["view_dependent"] is False
    assert spec["mesh_resolution"] == 64 and spec["seed"] == 9


@pytest.mark.parametrize("argv, expected", [
    (["spec", "a red cube", "--steps", "0"], "--steps: steps = 0 is out of range; allowed: an integer from 1 to 200000"),
    (["spec", "a red cube", "--t-range", "0.9", "0.1"], "--t-range: t_range = [0.9, 0.1] has min > max"),
    (["spec", " "], "PROMPT: prompt = ' ' is empty"),
    (["spec", "x", "--light-placement", "sun"], "invalid choice: 'sun'"),
    (["spec", "x", "--texture-size", "300"],
     "--texture-size: texture_size = 300 is not one of the allowed values; allowed: one of 0, 512, 1024, 2048, 4096"),
    (["spec", "x", "--face-count", "-1"], "--face-count: face_count = -1 is out of range; allowed: an integer from 0"),
])
def test_bad_flags_name_the_flag_and_range(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["serve", "--workers", "0"], "--workers: 0 is out of range; allowed: 1 to 64"),
    (["client", "status", "--server-key", "server.key"], "--server-key and --client-key go together"),
    (["client", "submit", "a red cube", "--steps", "0"], "--steps: steps = 0 is out of range"),
    (["client", "result", "abc", "--out", "x.fbx"], "--out must end in"),
])
def test_server_and_client_verbs_check_their_flags(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


def test_model_recommendations_sit_below_presets_and_flags():
    import argparse

    from blender_dreamfusion.shared.spec_args import add_spec_arguments, spec_from_args

    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    recommended = {"render_resolution": 32, "steps": 600, "guidance_scale": 20.0}
    seen = []

    def model_defaults(model):
        seen.append(model)
        return recommended

    spec = spec_from_args(parser.parse_args([]), parser, "a cube", model_defaults)
    assert (spec.render_resolution, spec.steps, spec.guidance_scale) == (32, 600, 20.0) and seen == ["toy-shapes"]
    spec = spec_from_args(parser.parse_args(["--preset", "draft", "--guidance-scale", "7", "--model", "./m"]),
                          parser, "a cube", model_defaults)
    assert spec.steps == 1000 and spec.render_resolution == 64 and spec.guidance_scale == 7.0
    assert seen[-1] == "./m"
