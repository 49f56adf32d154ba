"""`batch` end to end in the PyPI `bpy` module: the add-on's own `main()` against real backend subprocesses.

The results are checked from the outside: the .glb files with trimesh, the
.blend by opening it in a fresh Python process, summary.json as written.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import build_addon  # noqa: E402
from tests.helpers.addon import BACKEND, disable, install_from_zip  # noqa: E402
from tests.helpers.servers import ServeProcess  # noqa: E402

from blender_dreamfusion.shared.client import BackendClient  # noqa: E402

pytestmark = pytest.mark.slow

#: Small and quick on the tiny random model.
FAST = ["--steps", "12", "--render-resolution", "32", "--mesh-resolution", "32", "--views-per-step", "1",
        "--stream-every", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-addon")
    zip_path = build_addon.build_zip(root / "dist")
    module = install_from_zip(zip_path, root / "addons")
    yield module, zip_path
    if "dreamfusion" in bpy.context.preferences.addons:
        disable()


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory):
    servers = [ServeProcess(tmp_path_factory.mktemp(f"batch-jobs-{i}")) for i in range(2)]
    yield servers
    for server in servers:
        server.stop()


def _jobs_on(server: ServeProcess) -> list:
    client = BackendClient(server.endpoint)
    try:
        return client.request(client.list(), timeout=30).jobs
    finally:
        client.close()


def _reopen_blend(path: Path) -> dict:
    """Open the .blend in a fresh process (a real reopen, not this process's data) and describe its objects."""
    script = textwrap.dedent(f"""
        import bpy, json
        bpy.ops.wm.open_mainfile(filepath={str(path)!r})
        print("RESULT " + json.dumps({{o.name: {{"albedo": list(o.data.color_attributes.keys()),
            "vertices": len(o.data.vertices), "job": o.get("dreamfusion_job_id"),
            "location": list(o.location), "scene": [s.name for s in o.users_scene],
            "images": [[n.image.name, list(n.image.size), n.image.packed_file is not None]
                       for m in o.data.materials for n in m.node_tree.nodes if n.type == "TEX_IMAGE"]}}
            for o in bpy.data.objects}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[len("RESULT "):])


def test_three_prompts_one_bad_line_on_two_backends(addon, two_backends, tiny_sd, tmp_path, capsys):
    module, _ = addon
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,seed,guidance_scale,texture_size\n"
                       "a red cube,1,,\n"
                       "a blue torus,many,,\n"
                       "a green cone,2,7.5,512\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd), *FAST,
            "--backend", two_backends[0].endpoint, "--backend", two_backends[1].endpoint, "--progress-every", "1"]
    status = module.batch.main(argv)
    printed = capsys.readouterr().out
    assert status == 1, printed  # a skipped line makes the batch fail, after the rest ran
    assert "prompts.csv line 3 skipped: seed = 'many' is not an integer" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["finished"] == 2 and summary["total"] == 2
    assert [(s["line"], s["text"]) for s in summary["skipped"]] == [(3, "a blue torus,many,,")]
    cube, cone = summary["results"]
    assert (cube["prompt"], cube["line"], cube["seed"], cube["status"]) == ("a red cube", 2, 1, "finished")
    assert (cone["prompt"], cone["line"], cone["seed"], cone["spec"]["guidance_scale"]) == ("a green cone", 4, 2, 7.5)
    assert all(r["steps"] == 12 and r["seconds"] > 0 and r["error"] is None and r["job_id"] for r in (cube, cone))
    # Both backends got a job: one each, since each runs one at a time.
    assert {cube["backend"], cone["backend"]} == {s.endpoint for s in two_backends}
    assert [len(_jobs_on(s)) for s in two_backends] == [1, 1]
    # Progress lines: a state change per prompt, and step lines while running.
    assert "[1/2] finished: a red cube in" in printed and "[2/2] finished: a green cone in" in printed
    assert re.search(r"\[[12]/2\] running: a (red cube|green cone) on tcp://127\.0\.0\.1:\d+", printed), printed

    import trimesh

    for result in (cube, cone):
        glb = Path(result["files"]["glb"])
        assert glb == out / f"{result['slug']}.glb"
        scene = trimesh.load(glb)
        assert len(scene.geometry) == 1, f"{glb.name} holds {list(scene.geometry)}"  # that object alone
        mesh = next(iter(scene.geometry.values()))
        assert len(mesh.vertices) > 0
        if result is cube:
            # trimesh keeps COLOR_0 beside the material (the albedo material makes it a TextureVisuals).
            colours = np.asarray(mesh.visual.vertex_attributes["color"])
            assert colours.shape[0] == len(mesh.vertices) and np.ptp(colours[:, :3]) > 0
        else:  # the row asked for a texture: the .glb carries the baked image, not COLOR_0
            assert mesh.visual.material.baseColorTexture.size == (512, 512)
            assert "color" not in mesh.visual.vertex_attributes

    # Objects are named after their prompts (Blender numbers a name an earlier test in this process took).
    by_job = {obj["job"]: (name, obj) for name, obj in _reopen_blend(out / "results.blend").items()}
    assert set(by_job) == {cube["job_id"], cone["job_id"]}, by_job
    for result in (cube, cone):
        name, obj = by_job[result["job_id"]]
        assert name.startswith(result["prompt"]) and obj["albedo"] == ["albedo"] and obj["vertices"] > 0
        assert len(obj["scene"]) == 1 and obj["scene"][0].startswith("DreamFusion Batch")
    assert by_job[cube["job_id"]][1]["images"] == []
    assert by_job[cone["job_id"]][1]["images"] == [[f"DreamFusion {cone['job_id']} albedo", [512, 512], True]]
    assert by_job[cube["job_id"]][1]["location"] != by_job[cone["job_id"]][1]["location"]  # side by side


def test_a_failing_prompt_makes_the_exit_status_non_zero(addon, two_backends, tiny_sd, tmp_path):
    module, _ = addon
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red cube"}) + "\n"
                       + json.dumps({"prompt": "a missing model", "model": str(tmp_path / "no-such-model")}) + "\n",
                       encoding="utf-8")
    out = tmp_path / "out"
    status = module.batch.main(["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd),
                                *FAST, "--backend", two_backends[0].endpoint])
    assert status == 1
    summary = json.loads((out / "summary.json").read_text())
    good, bad = summary["results"]
    assert good["status"] == "finished" and Path(good["files"]["glb"]).exists()
    assert bad["status"] == "failed" and "model: no such folder" in bad["error"] and bad["files"] == {}
    assert summary["skipped"] == [] and summary["status"] == "failed"
    # A second batch in the same Blender session writes only its own results into its .blend.
    blend = _reopen_blend(out / "results.blend")
    # (Blender numbers a repeated name, "a red cube.001", when the earlier batch's object is still around.)
    assert [obj["job"] for obj in blend.values()] == [good["job_id"]], blend


#: A unit cube as an .obj (8 vertices, 12 triangles), written by hand so no exporter is under test.
CUBE_OBJ = "".join(f"v {x} {y} {z}\n" for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)) + (
    "f 1 3 4\nf 1 4 2\nf 5 6 8\nf 5 8 7\nf 1 2 6\nf 1 6 5\nf 3 7 8\nf 3 8 4\nf 1 5 7\nf 1 7 3\n"
    "f 2 4 8\nf 2 8 6\n")


def test_a_row_with_an_init_mesh_and_lock_geometry_textures_that_mesh(addon, two_backends, tiny_sd, tmp_path,
                                                                       capsys):
    module, _ = addon
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "crate.obj").write_text(CUBE_OBJ, encoding="utf-8")
    prompts = tmp_path / "assets.csv"
    prompts.write_text("prompt,init_mesh,lock_geometry\n"
                       "a red cube,assets/crate.obj,true\n"
                       "a blue cube,assets/missing.glb,true\n", encoding="utf-8")
    out = tmp_path / "out"
    objects_before = len(bpy.data.objects)
    status = module.batch.main(["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd),
                                *FAST, "--steps", "4", "--backend", two_backends[0].endpoint])
    printed = capsys.readouterr().out
    assert status == 1, printed  # the bad path was refused up front, naming its line and field
    assert "assets.csv line 3 skipped: init_mesh = 'assets/missing.glb' does not exist" in printed
    summary = json.loads((out / "summary.json").read_text())
    (crate,) = summary["results"]
    assert crate["status"] == "finished", crate["error"]
    assert crate["init_mesh"] == str((tmp_path / "assets" / "crate.obj").resolve())
    assert (crate["spec"]["init"], crate["spec"]["lock_geometry"]) == ("mesh", True)
    # The import left nothing behind: only the result's object is new.
    assert len(bpy.data.objects) == objects_before + 1 and not any(s.name.startswith("DreamFusion import")
                                                                  for s in bpy.data.scenes)
    import trimesh

    mesh = next(iter(trimesh.load(crate["files"]["glb"]).geometry.values()))
    colours = np.asarray(mesh.visual.vertex_attributes["color"])
    assert colours.shape[0] == len(mesh.vertices)
    # The locked result is the very cube that was sent (the OBJ's Y-up read into Blender's Z-up and written
    # back to glTF's Y-up), painted.
    corners = {tuple(v) for v in np.round(np.asarray(mesh.vertices), 4)}
    assert corners == {(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)}
    (obj,) = _reopen_blend(out / "results.blend").values()
    assert obj["vertices"] == 8 and obj["albedo"] == ["albedo"] and obj["job"] == crate["job_id"]


def test_bad_arguments_and_unreadable_files_exit_2_without_starting_anything(addon, tmp_path, capsys):
    module, _ = addon
    assert module.batch.main(["batch", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert module.batch.main(["batch", "--prompts", "p.txt", "--out", "o", "--steps", "-3"]) == 2
    assert "--steps: steps = -3 is out of range" in capsys.readouterr().err
    assert module.batch.main(["render"]) == 2
    # Every row bad: nothing starts, and the summary still says why.
    (tmp_path / "bad.csv").write_text("prompt,steps\na red cube,0\n", encoding="utf-8")
    assert module.batch.main(["batch", "--prompts", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["results"] == [] and summary["skipped"][0]["line"] == 2 and summary["status"] == "failed"
    assert "steps = 0 is out of range" in summary["skipped"][0]["error"]
    assert module.batch.main(["batch", "--help"]) == 0
    assert "--prompts FILE" in capsys.readouterr().out


INTERRUPT_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.helpers.addon import install_from_zip
from pathlib import Path
module = install_from_zip(Path({zip!r}), Path({addons!r}))
sys.exit(module.batch.main({argv!r}))
"""


def test_sigterm_cancels_the_running_job_and_still_writes_the_summary(addon, tiny_sd, tmp_path):
    """No --backend: the batch starts its own local backend (as the panel does), and stops it at the end."""
    _, zip_path = addon
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue torus\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd),
            "--backend-executable", str(BACKEND), "--device", "cpu", "--jobs-dir", str(tmp_path / "jobs"),
            "--steps", "5000", "--render-resolution", "32", "--mesh-resolution", "32", "--views-per-step", "1",
            "--stream-every", "0"]
    script = INTERRUPT_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), zip=str(zip_path),
                                     addons=str(tmp_path / "addons"), argv=argv)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=str(tmp_path))
    seen = []
    deadline = time.monotonic() + 180
    try:
        for line in process.stdout:
            seen.append(line)
            if "[1/2] running: a red cube" in line or time.monotonic() > deadline:
                break
        assert any("[1/2] running" in line for line in seen), "".join(seen)[-3000:]
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    printed = "".join(seen) + rest
    assert process.returncode == 130, printed[-3000:]
    assert "SIGTERM: cancelling running jobs" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    first, second = summary["results"]
    assert first["status"] == "cancelled" and first["job_id"] and first["step"] < 5000
    assert second["status"] == "not started" and second["job_id"] is None
    # The backend recorded the cancel (not just a dropped connection), and the batch stopped the backend it started.
    record = tmp_path / "jobs" / "jobs" / first["job_id"] / "job.json"
    assert json.loads(record.read_text())["state"] == "cancelled"
    backends = subprocess.run(["pgrep", "-f", f"--data-dir {tmp_path / 'jobs'}"], capture_output=True, text=True)
    assert backends.stdout.strip() == "", "the batch left its local backend running"


def test_a_dead_backends_prompt_runs_again_on_the_other(addon, tiny_sd, tmp_path_factory, tmp_path):
    """Nothing is lost: backend A is killed mid-job; B finishes its own prompt and then A's."""
    module, _ = addon
    servers = [ServeProcess(tmp_path_factory.mktemp(f"retry-jobs-{i}")) for i in range(2)]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na green cone\n", encoding="utf-8")
    out = tmp_path / "out"
    killed = []

    def kill_a_when_it_runs():
        # Runs beside the batch loop; reads only the summary file the batch keeps current.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            try:
                results = json.loads((out / "summary.json").read_text())["results"]
            except (OSError, ValueError):
                results = []
            victim = next((r for r in results if r["status"] == "running" and r["backend"] == servers[0].endpoint),
                          None)
            if victim is not None:
                servers[0].kill()
                killed.append(victim["prompt"])
            time.sleep(0.05)

    import threading

    watcher = threading.Thread(target=kill_a_when_it_runs, daemon=True)
    watcher.start()
    try:
        status = module.batch.main(["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd),
                                    *FAST, "--steps", "40", "--backend-timeout", "1",
                                    "--backend", servers[0].endpoint, "--backend", servers[1].endpoint])
    finally:
        watcher.join(timeout=5)
        for server in servers:
            if server.process.poll() is None:
                server.stop()
    assert killed, "backend A never ran a prompt"
    summary = json.loads((out / "summary.json").read_text())
    assert status == 0 and summary["status"] == "ok", summary
    moved = next(r for r in summary["results"] if r["prompt"] == killed[0])
    assert moved["attempts"] == 2 and moved["backend"] == servers[1].endpoint and moved["status"] == "finished"
    assert Path(moved["files"]["glb"]).exists()


def test_no_backend_answering_fails_every_prompt_with_the_reason(addon, tmp_path):
    module, _ = addon
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na green cone\n", encoding="utf-8")
    out = tmp_path / "out"
    started = time.monotonic()
    status = module.batch.main(["batch", "--prompts", str(prompts), "--out", str(out), "--backend", address,
                                "--backend-timeout", "1", "--seed", "1"])
    assert status == 1 and time.monotonic() - started < 30
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["failed", "failed"]
    assert summary["results"][0]["error"] == f"no backend left ({address}: no answer within 1 s)"
