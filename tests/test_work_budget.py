"""Bounds before work (#32): a start mesh or own UVs that would hold a job for hours are refused at submit; the
bake stays within a stated memory bound and both the bake and the fit stop on cancel; open meshes can be
textured with lock_geometry."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest
import trimesh

from blender_dreamfusion.backend.asset.atlas import uv_atlas
from blender_dreamfusion.backend.asset.bake import bake, rasterise
from blender_dreamfusion.backend.cli import main
from blender_dreamfusion.backend.geometry.mesh_distance import mesh_signed_distance
from blender_dreamfusion.backend.mesh_import import read_mesh_with_uvs
from blender_dreamfusion.backend.work_budget import (DEFAULT_MAX_BAKE_TEXELS, OverBudget, Stopped, WorkBudget,
                                                     bake_work, check_work, fit_work)
from blender_dreamfusion.shared import (Accepted, Cancelled, JobSpec, MeshData, Progress, Rejected,
                                        StatusReply)
from blender_dreamfusion.shared.client import BackendClient
from blender_dreamfusion.shared.recommended import builtin_recommendations
from tests.helpers.servers import ServeProcess, ThreadServer, ended, events_until, job_processes, resident_bytes

GREY = (128, 128, 128, 255)
FAST = ["--preset", "draft", "--render-resolution", "32", "--mesh-resolution", "48", "--seed", "5", "--quiet"]


def toy_spec(**fields) -> JobSpec:
    return JobSpec.from_dict({**builtin_recommendations("toy-shapes"), "prompt": "a red cube", "mesh_resolution": 64,
                              **fields})


def coloured(positions, triangles) -> MeshData:
    return MeshData.coerce(np.asarray(positions, np.float32), np.asarray(triangles, np.int64),
                           np.tile(np.array(GREY, np.uint8), (len(positions), 1)))


def hostile_mesh(triangles: int = 20_000) -> MeshData:
    """Large random triangles across the whole mesh, every one crossing many others (issue #32's killer)."""
    rng = np.random.default_rng(0)
    return coloured(rng.uniform(-1.0, 1.0, (3 * triangles, 3)), np.arange(3 * triangles).reshape(-1, 3))


def sphere(subdivisions: int = 7) -> MeshData:
    shape = trimesh.creation.icosphere(subdivisions=subdivisions)  # 7: 327,680 triangles; 6: 81,920
    return coloured(shape.vertices, shape.faces)


def hostile_uv_cube() -> tuple[MeshData, np.ndarray]:
    """The 12-triangle cube whose every triangle spans UVs 0..9999: wrapped into the tile, each covers it all."""
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    mesh = coloured(box.vertices, box.faces)
    return mesh, np.tile(np.array([[0, 0], [9999, 0], [0, 9999]], np.float32), (mesh.triangle_count, 1))


# --- the estimates and the check ------------------------------------------------------------------------------


def test_normal_meshes_and_uvs_fit_the_default_budget_and_the_hostile_ones_do_not_in_well_under_a_second():
    budget = WorkBudget()
    big = sphere(7)
    started = time.perf_counter()
    check_work(toy_spec(init="mesh"), big, None, budget)  # a 330k-triangle sphere: ~2 M units of 300 M
    assert fit_work(big.positions, big.triangles) < budget.max_fit_work / 50
    assert time.perf_counter() - started < 1.0
    for size in (2048, 4096):  # a mesh's own atlas, and one mirrored onto itself (two layers), bake at any size
        ball = sphere(4)
        atlas = uv_atlas(ball.positions, ball.triangles, 1024)
        spec = toy_spec(init="mesh", lock_geometry=True, texture_size=size)
        check_work(spec, ball, atlas, budget)
        check_work(spec, ball, np.concatenate([atlas[: len(atlas) // 2]] * 2), budget)

    hostile = hostile_mesh()
    started = time.perf_counter()
    with pytest.raises(OverBudget) as refused:
        check_work(toy_spec(init="mesh"), hostile, None, budget)
    assert time.perf_counter() - started < 1.0
    assert refused.value.field == "init_mesh" and "--max-fit-work" in refused.value.reason
    cube, uvs = hostile_uv_cube()
    started = time.perf_counter()
    with pytest.raises(OverBudget) as refused:
        check_work(toy_spec(init="mesh", lock_geometry=True, texture_size=4096), cube, uvs, budget)
    assert time.perf_counter() - started < 0.5
    assert refused.value.field == "init_uvs" and "--max-bake-texels" in refused.value.reason
    # The estimate is the texels the scan touches: 12 whole textures here, and 0 turns the limit off.
    assert 12 * 4096**2 <= bake_work(uvs, 4096) <= 12 * (4096**2 + 2 * 4096 + 1)
    check_work(toy_spec(init="mesh", lock_geometry=True, texture_size=4096), cube, uvs, WorkBudget(0, 0))


def assert_stopped_itself(client: BackendClient, job_id: str) -> None:
    """The job heard the cancel and stopped: the server did not have to end its process after the grace
    (which would say so in the reason)."""
    reply = client.request(client.status(job_id), timeout=10)
    assert isinstance(reply, StatusReply) and reply.jobs[0].state == "cancelled", reply
    assert reply.jobs[0].reason == "cancelled by a client", reply.jobs[0].reason


# --- at submit, through a real server --------------------------------------------------------------------------


def test_a_hostile_start_mesh_is_refused_at_submit_by_serve_within_a_second_naming_init_mesh(tmp_path):
    serve = ServeProcess(tmp_path / "data")
    try:
        with BackendClient(serve.endpoint) as client:
            started = time.monotonic()
            reply = client.request(client.submit(toy_spec(init="mesh"), init_mesh=hostile_mesh()), timeout=10)
            took = time.monotonic() - started
        assert isinstance(reply, Rejected), reply
        assert reply.field == "init_mesh" and "--max-fit-work" in reply.reason and "Remesh" in reply.reason
        assert took < 1.0, took
    finally:
        serve.kill()


def test_with_the_fit_budget_off_the_same_mesh_is_accepted_and_a_cancel_still_stops_it(tmp_path):
    serve = ServeProcess(tmp_path / "data", "--max-fit-work", "0")
    try:
        with BackendClient(serve.endpoint) as client:
            accepted = client.request(client.submit(toy_spec(init="mesh"), init_mesh=hostile_mesh()), timeout=10)
            assert isinstance(accepted, Accepted), accepted
            # Inside the fit (which, whole, would take ~25 minutes), the cancel is heard between its pieces.
            events_until(client, lambda e: isinstance(e, Progress) and e.phase == "fitting_mesh", timeout=60)
            time.sleep(1.0)
            asked = time.monotonic()
            client.cancel(accepted.job_id)  # answered by the job's `cancelled`
            assert isinstance(events_until(client, ended(accepted.job_id), timeout=60)[-1], Cancelled)
            assert time.monotonic() - asked < 10.0
            assert_stopped_itself(client, accepted.job_id)
    finally:
        serve.kill()


def test_hostile_own_uvs_are_refused_at_submit_naming_init_uvs(tmp_path):
    server = ThreadServer(tmp_path / "data")
    cube, uvs = hostile_uv_cube()
    try:
        with BackendClient(server.endpoint) as client:
            spec = toy_spec(init="mesh", lock_geometry=True, texture_size=4096)
            started = time.monotonic()
            reply = client.request(client.submit(spec, init_mesh=cube, init_uvs=uvs), timeout=10)
            assert isinstance(reply, Rejected) and reply.field == "init_uvs", reply
            assert "--max-bake-texels" in reply.reason and time.monotonic() - started < 1.0
    finally:
        server.stop()


def test_with_the_bake_budget_off_hostile_uvs_are_accepted_and_a_cancel_stops_the_bake(tmp_path):
    serve = ServeProcess(tmp_path / "data", "--max-bake-texels", "0")
    cube, uvs = hostile_uv_cube()
    try:
        with BackendClient(serve.endpoint) as client:
            spec = toy_spec(init="mesh", lock_geometry=True, texture_size=4096, steps=2, stream_every=0)
            accepted = client.request(client.submit(spec, init_mesh=cube, init_uvs=uvs), timeout=10)
            assert isinstance(accepted, Accepted), accepted
            # The bake alone would take ~40 s here (200 M texels); the worker hears the cancel between chunks.
            events_until(client, lambda e: isinstance(e, Progress) and e.phase == "baking", timeout=120)
            # The job's process stays within the bake's bound above what it held when the bake began (the
            # rasteriser once took 2 -> 4.9 GB here), sampled for the first seconds of the bake.
            (process,) = job_processes(serve.process.pid)
            before, peak = resident_bytes(process), 0
            sampled = time.monotonic()
            while time.monotonic() - sampled < 4.0:
                peak = max(peak, resident_bytes(process))
                time.sleep(0.05)  # sampling memory over time, not waiting for an event
            assert peak - before < bake_bound(4096), ((peak - before) / 2**20, bake_bound(4096) / 2**20)
            asked = time.monotonic()
            client.cancel(accepted.job_id)
            assert isinstance(events_until(client, ended(accepted.job_id), timeout=60)[-1], Cancelled)
            assert time.monotonic() - asked < 10.0
            assert_stopped_itself(client, accepted.job_id)
    finally:
        serve.kill()


def test_generate_refuses_a_hostile_mesh_file_before_loading_a_model(tmp_path, capsys):
    path = tmp_path / "hostile.ply"
    mesh = hostile_mesh()
    trimesh.Trimesh(mesh.positions, mesh.triangles, process=False).export(path)
    started = time.monotonic()
    assert main(["generate", "a red cube", "--init", "mesh", "--init-from", str(path),
                 "--out", str(tmp_path / "out.glb"), *FAST]) == 1
    assert time.monotonic() - started < 10.0
    err = capsys.readouterr().err
    assert "init_from" in err and "--max-fit-work" in err


# --- the bake: memory, sameness, cancel --------------------------------------------------------------------


def _reference_raster(corner_uvs: np.ndarray, size: int):
    """The rasteriser before the scanlines: every texel of each triangle's box tested, later triangles winning."""
    pixel = np.asarray(corner_uvs, np.float64).reshape(-1, 3, 2).copy()
    pixel[..., 0] = pixel[..., 0] * size - 0.5
    pixel[..., 1] = (1.0 - pixel[..., 1]) * size - 0.5
    face = np.full((size, size), -1, np.int64)
    bary = np.zeros((size, size, 3), np.float32)
    for index, (a, b, c) in enumerate(pixel):
        low = np.clip(np.ceil(pixel[index].min(axis=0)), 0, size - 1).astype(int)
        high = np.clip(np.floor(pixel[index].max(axis=0)), 0, size - 1).astype(int)
        if (pixel[index].max(axis=0) < 0).any() or (pixel[index].min(axis=0) > size - 1).any():
            continue
        y, x = np.mgrid[low[1]:high[1] + 1, low[0]:high[0] + 1]
        x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) <= 1e-12:
            continue
        l1 = ((x - a[0]) * (c[1] - a[1]) - (y - a[1]) * (c[0] - a[0])) / area
        l2 = ((b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])) / area
        weights = np.stack([1.0 - l1 - l2, l1, l2], axis=1)
        keep = weights.min(axis=1) >= -1e-9
        face[y[keep].astype(int), x[keep].astype(int)] = index
        bary[y[keep].astype(int), x[keep].astype(int)] = weights[keep]
    return face, bary


def test_the_scanline_rasteriser_gives_the_same_raster_as_testing_every_box():
    ball = sphere(3)
    rng = np.random.default_rng(3)
    for uvs, size in ((uv_atlas(ball.positions, ball.triangles, 256), 256),
                      (rng.uniform(-0.3, 1.3, (200 * 3, 2)).astype(np.float32), 96)):  # overlapping, off the edge
        face, bary = _reference_raster(uvs, size)
        raster = rasterise(uvs, size)
        assert (raster.inside == (face >= 0)).all()
        assert np.array_equal(raster.face[raster.inside], face[face >= 0])
        assert np.array_equal(raster.bary[raster.inside], bary[face >= 0])


def _albedo(points: np.ndarray) -> np.ndarray:
    return np.clip((points[:, :3] + 1.0) * 127.0, 0, 255).astype(np.uint8)


#: The bake's memory bound: its rasters (~80 bytes a texel: face, barycentrics, the distance transform's, the
#: image and the covered texels' copies) plus the chunks (backend/asset/bake.py: at most ~256 MB).
def bake_bound(size: int) -> int:
    return 80 * size * size + 256 * 2**20


def test_a_large_legal_bake_stays_within_the_memory_bound():
    # Eight triangles each covering the whole texture, at 2048 (33.6 M texels: within the default budget). The
    # rasteriser before this held each triangle's box at once: 8 x 4.2 M candidates, ~1 GB at a time.
    size = 2048
    positions = np.random.default_rng(1).uniform(-1, 1, (24, 3))
    triangles = np.arange(24).reshape(-1, 3)
    uvs = np.tile(np.array([[0, 0], [2, 0], [0, 2]], np.float32), (8, 1))
    assert bake_work(uvs, size) <= DEFAULT_MAX_BAKE_TEXELS
    tracemalloc.start()
    try:
        image = bake(positions, triangles, uvs, size, _albedo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.shape == (size, size, 3) and image.std() > 0  # the last triangle painted over the rest
    assert peak < bake_bound(size), (peak / 2**20, bake_bound(size) / 2**20)


_asked_times: dict[int, float] = {}


def _timed_stop(after: float):
    asked = threading.Event()

    def ask():
        _asked_times[id(asked)] = time.monotonic()
        asked.set()
    timer = threading.Timer(after, ask)
    return asked, timer


def _stop_latency(work, after: float = 1.0) -> float:
    asked, timer = _timed_stop(after)
    timer.start()
    try:
        with pytest.raises(Stopped):
            work(asked.is_set)
    finally:
        timer.cancel()
    assert asked.is_set(), "it finished before the stop was asked"
    return time.monotonic() - _asked_times[id(asked)]


def test_a_cancel_stops_the_bake_within_seconds():
    cube, uvs = hostile_uv_cube()  # 200 M texels unchecked: a minute of scanning
    latency = _stop_latency(lambda stop: bake(cube.positions, cube.triangles, uvs, 4096, _albedo, stop))
    assert latency < 3.0, latency


def test_a_cancel_stops_the_fit_within_seconds():
    mesh = hostile_mesh(2_000)  # ~2.5 G units: minutes of libigl in one piece
    latency = _stop_latency(lambda stop: mesh_signed_distance(mesh.positions * 0.45, mesh.triangles, 1.0, 128,
                                                              should_stop=stop))
    assert latency < 5.0, latency


# --- open meshes, textured --------------------------------------------------------------------------------------


def test_open_meshes_refuse_a_geometry_start_but_make_a_thin_shell_when_locked():
    plane = trimesh.creation.box([1.0, 1.0, 1e-4])  # closed but thinner than a cell: encloses no node
    sheet = trimesh.Trimesh([[-0.4, -0.4, 0.0], [0.4, -0.4, 0.0], [0.4, 0.4, 0.0], [-0.4, 0.4, 0.0]],
                            [[0, 1, 2], [0, 2, 3]], process=False)
    for mesh in (plane, sheet):
        with pytest.raises(ValueError, match="encloses no volume"):
            mesh_signed_distance(np.asarray(mesh.vertices) * 0.9, mesh.faces, 1.0, 64)
        shell = mesh_signed_distance(np.asarray(mesh.vertices) * 0.9, mesh.faces, 1.0, 64, open_shell=True)
        axis = np.linspace(-1, 1, 64)
        centre = np.abs(axis).argmin()
        assert shell[centre, centre, centre] < 0 and shell[centre, centre, 0] > 0  # on the sheet; above it
        assert shell[centre, centre, :].min() < 0 and (shell[centre, centre, :] < 0).sum() <= 3  # thin


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["plane", "triangle"])
def test_an_open_mesh_is_textured_with_lock_geometry_through_generate(tiny_sd, tmp_path, shape):
    if shape == "plane":
        mesh = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]],
                               process=False)
    else:
        mesh = trimesh.Trimesh([[0, 0, 0], [1, 0, 0.2], [0.3, 1, 0]], [[0, 1, 2]], process=False)
    source = tmp_path / f"{shape}.ply"
    mesh.export(source)
    out = tmp_path / f"{shape}.glb"
    assert main(["generate", "a red cube", "--model", str(tiny_sd), "--steps", "4", "--init", "mesh",
                 "--init-from", str(source), "--lock-geometry", "--texture-size", "512", "--out", str(out),
                 *FAST]) == 0
    back, uvs = read_mesh_with_uvs(out)
    assert back.triangle_count == len(mesh.faces)  # the artist's own triangles, not a shell around them
    assert uvs is not None and uvs.shape == (3 * back.triangle_count, 2)
    scene = trimesh.load(out, process=False)
    material = next(iter(scene.geometry.values())).visual.material
    image = getattr(material, "baseColorTexture", None)
    assert image is not None and image.size == (512, 512)


def test_the_budget_flags_are_checked_and_default_to_the_budget(capsys):
    for flag in ("--max-fit-work", "--max-bake-texels"):
        with pytest.raises(SystemExit):
            main(["serve", flag, "-1"])
        assert f"{flag}: -1 is out of range; allowed: 0 (no limit)" in capsys.readouterr().err
    from blender_dreamfusion.backend.server.admission import ServerLimits

    assert ServerLimits().max_fit_work == WorkBudget().max_fit_work
    assert ServerLimits().max_bake_texels == WorkBudget().max_bake_texels
