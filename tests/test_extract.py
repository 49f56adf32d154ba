"""Marching-cubes extraction against analytic fields."""

import numpy as np
import pytest
import torch

from blender_dreamfusion.backend import extract
from blender_dreamfusion.backend.extract import extract_mesh
from blender_dreamfusion.backend.geometry import DensityField
from blender_dreamfusion.backend.occupancy import OccupancyGrid
from blender_dreamfusion.backend.toy.quality import shape_distances
from tests.helpers.fields import EmptyField, SphereField, TwoSpheres


@pytest.mark.parametrize("resolution", [64, 128])
def test_sphere_extracts_at_the_right_radius_outward_and_coloured(resolution):
    result = extract_mesh(SphereField(0.5, colour=(1.0, 0.5, 0.0)), resolution)
    mesh = result.mesh
    assert result.message == "" and mesh.vertex_count > 1000
    radius = np.linalg.norm(mesh.positions, axis=1)
    assert abs(radius.mean() - 0.5) < 0.01 * 0.5
    corners = mesh.positions[mesh.triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (np.einsum("ij,ij->i", normals, corners.mean(axis=1)) > 0).all()  # counter-clockwise from outside
    assert mesh.positions.dtype == np.float32 and mesh.triangles.dtype == np.int32
    assert (mesh.colors == [255, 128, 0, 255]).all()


def test_off_centre_sphere_lands_where_it_is_in_blender_coordinates():
    mesh = extract_mesh(SphereField(0.3, centre=(0.2, -0.3, 0.4)), 96).mesh
    assert np.allclose(mesh.positions.mean(axis=0), [0.2, -0.3, 0.4], atol=0.01)


def test_no_surface_gives_an_empty_mesh_and_a_clear_message():
    result = extract_mesh(EmptyField(), 32)
    assert result.mesh.vertex_count == 0 and result.mesh.triangle_count == 0
    assert "no surface" in result.message and "highest density is 0" in result.message


class FaintBall(SphereField):
    """A ball whose density stops at `peak`."""

    def __init__(self, radius: float, peak: float):
        super().__init__(radius)
        self.peak = peak

    def forward(self, points):
        density, colour = super().forward(points)
        return density.clamp_max(self.peak), colour


class SoftCubeWithCores(SphereField):
    """What SDS against a small prior often grows: a cube of density 2 (80 % opaque across its width,
    so every render shows the cube) holding two dense lumps, the only places above density 5."""

    def forward(self, points):
        inside = (points.abs() <= 0.4).all(dim=-1)
        lumps = torch.stack([(points - torch.tensor(c)).norm(dim=-1) for c in ((0.15, 0.0, 0.0), (-0.15, 0.1, 0.0))])
        density = torch.where(inside, 2.0, 0.0) + 8.0 * (lumps.amin(0) < 0.12)
        return density, self.colour.expand(points.shape[0], 3)


@pytest.mark.parametrize("resolution", [64, 96])
def test_a_soft_field_is_drawn_where_its_renders_are_opaque_not_around_its_dense_cores(resolution):
    result = extract_mesh(SoftCubeWithCores(), resolution)
    assert result.iso < 2.0 and result.message == ""
    low, high = result.mesh.positions.min(axis=0), result.mesh.positions.max(axis=0)
    assert np.allclose(low, -0.4, atol=0.05) and np.allclose(high, 0.4, atol=0.05)  # the cube, not the lumps
    assert shape_distances(result.mesh)["cube"] < 0.05


def test_a_field_that_never_reaches_the_default_level_is_drawn_where_it_is_opaque():
    result = extract_mesh(FaintBall(0.4, peak=2.0), 48)
    assert result.iso < 2.0 and result.message == ""
    assert abs(np.linalg.norm(result.mesh.positions, axis=1).mean() - 0.4) < 0.03


def test_a_field_no_render_sees_half_opaque_is_drawn_at_half_its_peak_with_a_note():
    result = extract_mesh(FaintBall(0.3, peak=0.8), 48)  # 0.8 across 0.6: at most 38 % opaque
    assert result.mesh.vertex_count > 0 and result.iso == pytest.approx(0.4, rel=0.05)
    assert "no render of the field is half opaque yet" in result.message


def test_a_crisp_field_keeps_the_default_level():
    assert extract_mesh(SphereField(0.5), 64).iso == extract.DEFAULT_ISO


def test_tiny_floaters_are_removed():
    field = TwoSpheres(SphereField(0.5), SphereField(0.04, centre=(0.8, 0.8, 0.8)))
    mesh = extract_mesh(field, 96).mesh
    assert np.linalg.norm(mesh.positions - 0.8, axis=1).min() > 0.3
    assert abs(np.linalg.norm(mesh.positions, axis=1).mean() - 0.5) < 0.01


def test_occupancy_skipping_gives_the_same_mesh():
    torch.manual_seed(0)
    field = DensityField()
    grid = OccupancyGrid(field.bound, 64)
    grid.update(field.density, torch.Generator().manual_seed(0))
    full = extract_mesh(field, 64).mesh
    skipped = extract_mesh(field, 64, occupancy=grid).mesh
    assert full.vertex_count > 0 and np.array_equal(full.triangles, skipped.triangles)
    assert np.allclose(full.positions, skipped.positions)


@pytest.mark.parametrize("resolution", [96, 128, 160])
def test_narrow_band_extraction_matches_the_full_grid(resolution):
    torch.manual_seed(1)
    field = DensityField()
    with torch.no_grad():  # give the blob structure at every scale so the surface is not a plain sphere
        for g in field.grids:
            g.normal_(0.0, 1.0)
    result = extract_mesh(field, resolution)
    banded = result.mesh
    full_volume = extract.density_grid(field, resolution)
    import mcubes

    vertices, faces = mcubes.marching_cubes(np.pad(full_volume, 1), result.iso)
    assert banded.vertex_count > 100
    # Same surface: every banded vertex lies on the full-grid surface's vertex set (up to float error).
    full = (vertices - 1.0) * (2.0 / (resolution - 1)) - 1.0
    assert len(full) >= banded.vertex_count  # floaters may be dropped from the banded result
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(full).query(banded.positions.astype(np.float64))
    assert distance.max() < 1e-5
