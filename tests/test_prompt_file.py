"""Prompt lists for `batch`: every format keeps line numbers; a bad row is skipped with its line and reason."""

from __future__ import annotations

import json

import pytest

from blender_dreamfusion.addon_core.batch_options import UsageError, parse_batch_args
from blender_dreamfusion.addon_core.batch_plan import plan_batch
from blender_dreamfusion.shared.names import slugify
from blender_dreamfusion.addon_core.prompt_file import PromptFileError, parse_prompts, read_prompt_file


def test_text_skips_comments_and_blank_lines_and_keeps_line_numbers():
    parsed = parse_prompts("# toys\n\na red cube\n  a blue torus  \n#a green cone\n", "txt")
    assert [(r.line, r.prompt) for r in parsed.rows] == [(3, "a red cube"), (4, "a blue torus")]
    assert parsed.bad == []


def test_csv_converts_cells_by_field_and_reports_a_bad_cell_by_line_and_field():
    text = ("prompt,steps,seed,camera_elevation,view_dependent\n"
            "a red cube,300,,10 40,yes\n"
            "# not this one\n"
            "a blue torus,many,2,,\n"
            "\"a green,\nsphere\",5,1,0;30,false\n"
            ",5,1,,\n")
    parsed = parse_prompts(text, "csv")
    assert parsed.rows[0].line == 2
    assert parsed.rows[0].fields == {"prompt": "a red cube", "steps": 300, "camera_elevation": [10.0, 40.0],
                                     "view_dependent": True}
    # A quoted cell spanning two lines: the row is reported where it starts.
    assert (parsed.rows[1].line, parsed.rows[1].fields["camera_elevation"]) == (5, [0.0, 30.0])
    assert [(b.line, b.error.split(";")[0]) for b in parsed.bad] == [
        (4, "steps = 'many' is not an integer"), (7, "the prompt cell is empty")]
    assert "allowed: an integer from 1 to" in parsed.bad[0].error


def test_csv_header_must_name_a_prompt_column_and_known_fields():
    with pytest.raises(PromptFileError, match=r"line 1: .*unknown column\(s\) 'stepz'.*JobSpec fields: prompt"):
        parse_prompts("prompt,stepz\na red cube,3\n", "csv")
    with pytest.raises(PromptFileError, match="no 'prompt' column"):
        parse_prompts("steps\n3\n", "csv")


def test_json_list_items_keep_the_line_they_start_on():
    text = '[\n  "a red cube",\n  {"prompt": "a blue torus",\n   "steps": 7},\n  42,\n  {"seed": 1}\n]\n'
    parsed = parse_prompts(text, "json")
    assert [(r.line, r.fields) for r in parsed.rows] == [
        (2, {"prompt": "a red cube"}), (3, {"prompt": "a blue torus", "steps": 7})]
    assert [(b.line, b.error) for b in parsed.bad] == [
        (5, 'an item must be a prompt string or an object with a "prompt"'), (6, 'no "prompt" in this item')]


def test_broken_json_is_a_file_error_with_its_line():
    with pytest.raises(PromptFileError, match=r"line 3: not valid JSON"):
        parse_prompts('[\n "a red cube",\n "a blue torus" "x"\n]', "json")
    with pytest.raises(PromptFileError, match="must hold a list"):
        parse_prompts('{"prompt": "a red cube"}', "json")


def test_json_lines_skip_a_broken_line_and_run_the_rest(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a red cube", "seed": 4}\n{"prompt": "a blue\n"a green cone"\n', encoding="utf-8")
    parsed = read_prompt_file(path)
    assert [(r.line, r.prompt) for r in parsed.rows] == [(1, "a red cube"), (3, "a green cone")]
    assert parsed.bad[0].line == 2 and parsed.bad[0].error.startswith("not JSON")
    with pytest.raises(PromptFileError, match="cannot read it"):
        read_prompt_file(tmp_path / "missing.txt")


def test_plan_precedence_model_recommendations_then_preset_then_flags_then_row():
    parsed = parse_prompts('[{"prompt": "a red cube", "steps": 9}, "a blue torus", '
                           '{"prompt": "a cone", "model": "toy-shapes", "preset": "high"}, '
                           '{"prompt": "a sphere", "guidance_scale": -1}]', "json")
    recommended = {"toy-shapes": {"steps": 600, "render_resolution": 32, "guidance_scale": 20.0}}
    items, bad = plan_batch(parsed, {"seed": 5, "mesh_resolution": 48}, preset="draft",
                            model_defaults=lambda m: recommended.get(m, {}), default_model="toy-shapes")
    cube, torus, cone = (item.spec for item in items)
    assert (cube.steps, cube.seed, cube.mesh_resolution, cube.render_resolution) == (9, 5, 48, 64)
    assert (torus.steps, torus.guidance_scale, torus.model) == (1000, 20.0, "toy-shapes")
    assert (cone.steps, cone.render_resolution, cone.mesh_resolution) == (10000, 128, 48)
    assert [i.index for i in items] == [1, 2, 3]
    assert len(bad) == 1 and bad[0].line == 1 and bad[0].error.startswith("guidance_scale = -1")


def test_slugs_are_file_safe_and_unique():
    parsed = parse_prompts("A red cube, front!\na red cube front\nÜber-Würfel\n???\n", "txt")
    items, _ = plan_batch(parsed, {"seed": 1})
    assert [i.slug for i in items] == ["a-red-cube-front", "a-red-cube-front-2", "uber-wurfel", "prompt"]
    assert slugify("x" * 100) == "x" * 60
    # The backend CLI's default file name uses the same function with its own separator and fallback.
    assert slugify("A red cube!", separator="_", empty="mesh") == "a_red_cube"
    assert slugify("!!", separator="_", empty="mesh") == "mesh"


def test_batch_flags_are_checked_where_they_enter():
    options = parse_batch_args(["--prompts", "p.txt", "--out", "o", "--steps", "20", "--backend", "tcp://h:1",
                                "--backend", "tcp://h:2", "--camera-elevation", "5", "30", "--preset", "draft"])
    assert options.flags == {"steps": 20, "camera_elevation": [5.0, 30.0]} and options.preset == "draft"
    assert options.backends == ["tcp://h:1", "tcp://h:2"]
    with pytest.raises(UsageError, match=r"--steps: steps = 0 is out of range; allowed: an integer from 1"):
        parse_batch_args(["--prompts", "p.txt", "--out", "o", "--steps", "0"])
    with pytest.raises(UsageError, match=r"--backend 'localhost:5555': expected an address like tcp://HOST:PORT"):
        parse_batch_args(["--prompts", "p.txt", "--out", "o", "--backend", "localhost:5555"])
    with pytest.raises(UsageError, match="the following arguments are required: --out"):
        parse_batch_args(["--prompts", "p.txt"])


def test_init_mesh_rows_resolve_beside_the_prompt_file_and_bad_paths_are_refused_up_front(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "vase.obj").write_text("v 0 0 0\n", encoding="utf-8")
    (tmp_path / "statue.GLB").write_bytes(b"glTF")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    prompts = tmp_path / "assets.csv"
    prompts.write_text("prompt,init_mesh,lock_geometry,init_from\n"
                       "a red vase,assets/vase.obj,true,\n"
                       f"a bronze statue,{tmp_path / 'statue.GLB'},,\n"
                       "a mossy boulder,boulder.ply,true,\n"
                       "a paper note,notes.txt,true,\n"
                       "a folder,assets.gltf,true,\n"
                       "a resumed vase,assets/vase.obj,true,job-1\n"
                       "a locked blob,,true,\n", encoding="utf-8")
    items, bad = plan_batch(read_prompt_file(prompts), {"seed": 1})
    vase, statue = items
    assert vase.init_mesh == str((tmp_path / "assets" / "vase.obj").resolve())
    assert (vase.spec.init, vase.spec.init_from, vase.spec.lock_geometry) == ("mesh", "", True)
    # The suffix is matched whatever its case.
    assert statue.init_mesh.endswith("statue.GLB") and (statue.spec.init, statue.spec.lock_geometry) == ("mesh", False)
    assert [(b.line, b.error.split(";")[0]) for b in bad] == [
        (4, "init_mesh = 'boulder.ply' does not exist"),
        (5, "init_mesh = 'notes.txt' is not a mesh file of a kind Blender reads here"),
        (6, "init_mesh = 'assets.gltf' does not exist"),
        (7, "init_mesh = 'assets/vase.obj' is given with another start"),
        (8, "lock_geometry = True is set")]
    assert "allowed: a .glb/.gltf/.obj/.ply file on this machine" in bad[0].error
    # JSON rows take the same field, and a row's own start wins over the batch's flags.
    parsed = parse_prompts(json.dumps([{"prompt": "a vase", "init_mesh": str(tmp_path / "assets" / "vase.obj")}]),
                           "json")
    (item,), none = plan_batch(parsed, {"seed": 1, "init": "checkpoint", "init_from": "job-9", "lock_geometry": True})
    assert item.init_mesh and (item.spec.init, item.spec.init_from, item.spec.lock_geometry) == ("mesh", "", True)
    assert none == []
