"""init = mesh: a start mesh's fit before any SDS step, in the artist's coordinates; the scene mapping; locked
shapes and their checkpoints; reading start-mesh files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from blender_dreamfusion.backend.checkpoint import continuing_spec, load_checkpoint, save_checkpoint
from blender_dreamfusion.backend.export import export_mesh
from blender_dreamfusion.backend.geometry.mesh_distance import NoVolumeError
from blender_dreamfusion.backend.mesh_import import MeshFileError, read_mesh
from blender_dreamfusion.backend.mesh_metrics import bounding_diagonal, chamfer, colour_error
from blender_dreamfusion.backend.scene_mapping import FRAMED_HALF_EXTENT, SceneMapping
from blender_dreamfusion.backend.trainer import Trainer, schedule_progress
from blender_dreamfusion.shared import JobSpec, MeshData

MONKEY = """
import bpy, numpy as np, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(0.3, -0.2, 1.0))
obj = bpy.context.active_object
mesh = obj.data
mesh.calc_loop_triangles()
co = np.zeros(len(mesh.vertices) * 3, np.float32); mesh.vertices.foreach_get("co", co)
tris = np.zeros(len(mesh.loop_triangles) * 3, np.int32); mesh.loop_triangles.foreach_get("vertices", tris)
world = np.asarray(obj.matrix_world)
co = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
np.savez(sys.argv[1], positions=co, triangles=tris.reshape(-1, 3))
"""


def gradient_colours(positions: np.ndarray) -> np.ndarray:
    """A colour that varies smoothly over the object: red along x, green along y, blue along z."""
    low, high = positions.min(0), positions.max(0)
    rgb = ((positions - low) / (high - low) * 180 + 40).astype(np.uint8)
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


def coloured(positions, triangles) -> MeshData:
    positions = np.asarray(positions, np.float32)
    return MeshData.coerce(positions, triangles, gradient_colours(positions))


@pytest.fixture(scope="module")
def monkey(tmp_path_factory) -> MeshData:
    """Blender's monkey: open (its eye sockets), in three parts (head and two eyes), made by Blender itself."""
    out = tmp_path_factory.mktemp("monkey") / "monkey.npz"
    subprocess.run([sys.executable, "-c", MONKEY, str(out)], check=True, capture_output=True, timeout=300)
    with np.load(out) as data:
        return coloured(data["positions"], data["triangles"])


def closed_mesh() -> MeshData:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    return coloured(sphere.vertices, sphere.faces)


def far_large_mesh() -> MeshData:
    """A 10 m box-and-torus, 100 m from the origin."""
    box = trimesh.creation.box([10.0, 6.0, 4.0]).subdivide().subdivide()
    torus = trimesh.creation.torus(3.0, 1.0, 64, 32).apply_translation([0.0, 0.0, 4.5])
    both = trimesh.util.concatenate([box, torus]).apply_translation([100.0, -40.0, 25.0])
    return coloured(both.vertices, both.faces)


def fitted(mesh: MeshData, geometry: str = "sdf", lock: bool = False, **fields) -> Trainer:
    spec = JobSpec(prompt="a red cube", init="mesh", steps=10, mesh_resolution=128, geometry=geometry,
                   lock_geometry=lock, seed=7, **fields)
    trainer = Trainer(spec, guidance=None)
    trainer.start_from_mesh(mesh)
    return trainer


def fidelity(trainer: Trainer, mesh: MeshData) -> tuple[float, float]:
    """(Chamfer / bounding-box diagonal, mean colour error in 0-255) of the mesh the trainer would stream now."""
    out = trainer.snapshot(preview=False).extraction.mesh
    assert out.triangle_count > 0
    return chamfer(out, mesh) / bounding_diagonal(mesh), colour_error(out, mesh)


@pytest.mark.parametrize("geometry", ["sdf", "density"])
@pytest.mark.parametrize("name", ["closed", "monkey", "far_and_large"])
def test_the_fit_reproduces_the_mesh_in_its_own_coordinates(name, geometry, monkey):
    mesh = {"closed": closed_mesh, "monkey": lambda: monkey, "far_and_large": far_large_mesh}[name]()
    trainer = fitted(mesh, geometry)
    assert trainer.step == 0
    distance, colour = fidelity(trainer, mesh)
    assert distance <= 0.01, f"{name} ({geometry}): Chamfer {distance:.4f} of the diagonal"
    assert colour <= 10.0, f"{name} ({geometry}): colour error {colour:.1f} / 255"


def test_the_monkey_is_open_and_in_parts(monkey):
    # What makes it a real test of the inside/outside rule: ray parity would be ill-defined on it.
    tm = trimesh.Trimesh(monkey.positions, monkey.triangles, process=False)
    assert not tm.is_watertight
    assert len(tm.split(only_watertight=False)) >= 3


def test_flipped_and_self_intersecting_parts_still_have_an_inside():
    inside_out = trimesh.creation.box([1.0, 1.0, 1.0])
    inside_out.invert()  # normals inward
    overlapping = trimesh.creation.box([1.0, 0.4, 0.4]).apply_translation([0.6, 0.0, 0.0])  # crosses the first
    both = trimesh.util.concatenate([inside_out, overlapping])
    mesh = coloured(both.vertices, both.faces)
    trainer = fitted(mesh)
    out = trainer.snapshot(preview=False).extraction.mesh
    # The union's outer surface: as wide as both boxes together, and one solid (no wall where they overlap).
    width = out.positions[:, 0].max() - out.positions[:, 0].min()
    assert abs(width - 1.6) < 0.05
    centre = torch.tensor([[0.0, 0.0, 0.0], [0.55, 0.0, 0.0]])
    assert (trainer.field.signed_distance(torch.as_tensor(trainer.mapping.to_scene(centre.numpy()))) < 0).all()


def test_the_mapping_frames_the_mesh_and_maps_back():
    mesh = far_large_mesh()
    mapping = SceneMapping.framing(mesh.positions)
    scene = mapping.to_scene(mesh.positions)
    half = (scene.max(0) - scene.min(0)).max() / 2
    assert abs(half - FRAMED_HALF_EXTENT) < 1e-5 and np.abs((scene.max(0) + scene.min(0)) / 2).max() < 1e-5
    assert np.allclose(mapping.to_world(scene), mesh.positions, atol=1e-4)
    assert SceneMapping.from_json(mapping.to_json()) == mapping


def test_a_locked_start_is_the_artists_mesh_itself_and_survives_a_checkpoint(tmp_path):
    mesh = far_large_mesh()
    trainer = fitted(mesh, lock=True)
    snapshot = trainer.snapshot(preview=False)
    out = snapshot.extraction.mesh
    assert np.array_equal(out.positions, mesh.positions) and np.array_equal(out.triangles, mesh.triangles)
    assert colour_error(out, mesh) <= 10.0
    update = snapshot.as_update("job-1")
    assert update.mesh is None and np.array_equal(update.vertex_colors.colors, out.colors)
    # Only colour can learn.
    shape = {id(p) for p in trainer.field.shape.parameters()}
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert trained and not (shape & trained)

    path = save_checkpoint(trainer, tmp_path / "locked.safetensors")
    assert continuing_spec(trainer.spec.replace(lock_geometry=False), path).lock_geometry  # stays locked
    again = load_checkpoint(path, trainer.spec.replace(lock_geometry=False), guidance=None)
    assert again.locked and again.spec.lock_geometry and again.mapping == trainer.mapping
    assert again.snapshot(preview=False).extraction.mesh == out


def test_locking_a_checkpoint_keeps_its_shape(tmp_path):
    trainer = fitted(closed_mesh())
    before = trainer.snapshot(preview=False).extraction.mesh
    path = save_checkpoint(trainer, tmp_path / "free.safetensors")
    assert not continuing_spec(trainer.spec.replace(lock_geometry=False), path).lock_geometry
    locked = load_checkpoint(path, trainer.spec.replace(init="checkpoint", init_from=str(path), lock_geometry=True),
                             guidance=None, resume=False)
    locked.lock_geometry()
    after = locked.snapshot(preview=False).extraction.mesh
    assert locked.locked and chamfer(after, before) / bounding_diagonal(before) < 0.005
    assert colour_error(after, before) <= 10.0


def test_a_sheet_is_refused_with_a_reason():
    plane = trimesh.creation.box([1.0, 1.0, 1e-4])
    with pytest.raises(NoVolumeError, match="encloses no volume"):
        fitted(coloured(plane.vertices, plane.faces))


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_an_exported_mesh_reads_back_where_it_was(tmp_path, suffix):
    mesh = far_large_mesh()
    path = export_mesh(mesh, tmp_path / f"mesh{suffix}")
    back = read_mesh(path)
    assert np.allclose(back.positions, mesh.positions, atol=1e-4)
    assert np.array_equal(back.triangles, mesh.triangles)
    # .glb keeps colours as 8-bit linear values, which are coarse in the darks: sRGB 40 comes back as 38.
    assert np.abs(back.colors.astype(int) - mesh.colors).max() <= (3 if suffix == ".glb" else 0)


def test_unreadable_start_files_are_refused_naming_the_file(tmp_path):
    with pytest.raises(MeshFileError, match="must be one of"):
        read_mesh(tmp_path / "mesh.stl")
    with pytest.raises(MeshFileError, match="no such file"):
        read_mesh(tmp_path / "missing.glb")
    (tmp_path / "broken.glb").write_bytes(b"not a glb")
    with pytest.raises(MeshFileError, match="broken.glb"):
        read_mesh(tmp_path / "broken.glb")


def test_a_continuation_runs_its_schedules_on_from_its_parents():
    assert schedule_progress((0, 0.0), 300, 600) == 0.5
    # Resuming a job reproduces its own schedule ...
    assert schedule_progress((300, 0.5), 450, 600) == pytest.approx(0.75)
    # ... a finished parent's child stays at the end of them: re-prompting never softens its wall again ...
    assert schedule_progress((600, 1.0), 700, 900) == 1.0
    # ... and a parent cancelled half-way has its remaining half spread over the child's steps.
    assert schedule_progress((300, 0.5), 400, 500) == pytest.approx(0.75)
    assert schedule_progress((300, 0.5), 300, 300) == 0.5
