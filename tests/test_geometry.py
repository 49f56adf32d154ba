"""Geometries behind one interface: the signed-distance geometry against analytic answers, and its eikonal term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.extract import extract_mesh
from blender_dreamfusion.backend.geometry import (GEOMETRIES, DensityField, SDFConfig, SDFField, make_geometry,
                                                  volsdf_density)
from blender_dreamfusion.backend.renderer import render
from tests.helpers.fields import SphereSDF
from blender_dreamfusion.shared.jobspec import GEOMETRY_NAMES


def test_every_jobspec_geometry_has_a_class_and_the_classes_say_their_name():
    assert set(GEOMETRIES) == set(GEOMETRY_NAMES)
    for name in GEOMETRY_NAMES:
        assert make_geometry(name).name == name


def test_an_analytic_sphere_sdf_renders_a_disc_of_the_projected_radius():
    radius, distance, fov, res = 0.5, 2.0, 60.0, 64
    out = render(SphereSDF(radius), make_cameras(0.0, 0.0, distance, fov), res)
    measured = math.sqrt(float((out.opacity > 0.5).sum()) / math.pi)
    expected = math.tan(math.asin(radius / distance)) / math.tan(math.radians(fov) / 2) * res / 2
    assert abs(measured - expected) < 1.0
    assert float(out.opacity[0, 0, res // 2, res // 2]) > 0.99
    assert abs(float(out.depth[0, 0, res // 2, res // 2]) - (distance - radius)) < 0.02
    # Normals come from the SDF's gradient: at the disc's centre the normal faces the camera (on -Y).
    assert torch.allclose(out.normal[0, :, res // 2, res // 2], torch.tensor([0.0, -1.0, 0.0]), atol=0.05)


@pytest.mark.parametrize("resolution", [64, 128])  # 128 takes the narrow-band path
def test_an_analytic_sphere_sdf_meshes_at_its_true_radius_with_no_level_to_choose(resolution):
    extraction = extract_mesh(SphereSDF(0.4), resolution)
    radii = np.linalg.norm(extraction.mesh.positions, axis=1)
    assert extraction.iso == 0.0 and extraction.message == ""
    assert abs(radii.mean() - 0.4) < 0.02 * 0.4 and radii.std() < 0.01
    # Wound outward: the signed volume is positive and close to the ball's.
    p, f = extraction.mesh.positions.astype(np.float64), extraction.mesh.triangles
    volume = np.einsum("ij,ij->i", p[f[:, 0]], np.cross(p[f[:, 1]], p[f[:, 2]])).sum() / 6.0
    assert abs(volume - 4 / 3 * math.pi * 0.4**3) < 0.03 * 4 / 3 * math.pi * 0.4**3


@pytest.mark.parametrize("offset, words", [(2.0, "never crosses zero"), (-3.0, "never crosses zero")])
def test_a_field_with_no_zero_crossing_gives_an_empty_mesh_and_says_so(offset, words):
    extraction = extract_mesh(SphereSDF(0.4, offset=offset), 96)
    assert extraction.mesh.vertex_count == 0 and extraction.mesh.triangle_count == 0
    assert words in extraction.message and "runs from" in extraction.message


def test_the_learnt_sdf_starts_as_a_sphere_of_the_configured_radius():
    field = SDFField(SDFConfig(radius=0.45))
    radii = np.linalg.norm(extract_mesh(field, 96).mesh.positions, axis=1)
    assert abs(radii.mean() - 0.45) < 0.005
    normals = field.normals(torch.tensor([[0.45, 0.0, 0.0], [0.0, 0.0, -0.45]]))
    assert torch.allclose(normals, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]), atol=0.02)


def test_volsdf_density_is_opaque_inside_empty_outside_and_sharpens_over_the_run():
    sdf = torch.tensor([-0.2, 0.0, 0.2])
    density = volsdf_density(sdf, 0.01)
    assert float(density[0]) == pytest.approx(100.0, rel=1e-3) and float(density[1]) == pytest.approx(50.0)
    assert float(density[2]) < 1e-6
    field = SDFField()
    betas = []
    for step in (0, 300, 600, 900):
        field.set_progress(step, 900)
        betas.append(field.beta)
    assert betas[0] == pytest.approx(field.config.beta_start) and betas[-1] == pytest.approx(field.config.beta_end)
    assert betas == sorted(betas, reverse=True) and betas[1] < betas[0]


def test_the_finer_sdf_levels_fade_in_one_after_another():
    field = SDFField(SDFConfig(resolutions=(16, 32, 64), features_per_level=2, coarse_to_fine=0.3))  # 2 fine levels
    seen = []
    for step in (0, 67, 135, 200, 270, 900):
        field.set_progress(step, 900)
        seen.append([round(float(w), 2) for w in field.level_weights[::2]])
    assert seen[0] == [1.0, 0.0, 0.0] and seen[2] == [1.0, 1.0, 0.0] and seen[-1] == [1.0, 1.0, 1.0]
    assert 0.0 < seen[1][1] < 1.0 and 0.0 < seen[3][2] < 1.0


def _cube_fit(eikonal_weight: float, steps: int = 150) -> SDFField:
    """Fit the SDF's inside to a cube of half-side 0.35 from random labelled points."""
    torch.manual_seed(0)
    field = SDFField(SDFConfig(resolutions=(16, 32), colour_resolutions=(8,), coarse_to_fine=0.0))
    field.set_progress(0, steps)
    optimiser = torch.optim.Adam([{"params": field.grid_parameters(), "lr": 0.02},
                                  {"params": field.network_parameters(), "lr": 0.005}])
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        points = torch.rand(4096, 3, generator=generator) * 2 - 1
        inside = (points.abs().amax(dim=1) < 0.35).float()
        logits = -field.signed_distance(points) / 0.02
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, inside)
        surface = points[(points.abs().amax(dim=1) - 0.35).abs() < 0.05][:1024]
        if eikonal_weight:
            loss = loss + field.losses(surface, generator, {"eikonal": eikonal_weight})["eikonal"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return field


def test_the_eikonal_term_keeps_the_gradient_a_unit_near_the_surface():
    fitted = _cube_fit(eikonal_weight=1.0)
    near_surface = extract_mesh(fitted, 64).mesh.positions
    points = torch.as_tensor(near_surface[::7], dtype=torch.float32)
    points = points + 0.02 * torch.randn(points.shape, generator=torch.Generator().manual_seed(1))
    norms = fitted.gradient(points).norm(dim=-1).detach()
    assert len(points) > 200 and float((norms - 1.0).abs().mean()) < 0.1
    # Without it the same fit steepens the wall (a sharper logit is a cheaper way to classify).
    steep = _cube_fit(eikonal_weight=0.0).gradient(points).norm(dim=-1).detach()
    assert float((steep - 1.0).abs().mean()) > 0.1


def test_the_density_geometry_keeps_its_state_dict_names_so_old_checkpoints_load():
    keys = set(DensityField().state_dict())
    assert {"grids.0", "grids.3", "mlp.0.weight", "mlp.2.bias"} <= keys


@pytest.mark.parametrize("render_resolution, levels", [(16, (16,)), (32, (16, 32)), (64, (16, 32, 64)),
                                                       (100, (16, 32, 64)), (512, (16, 32, 64, 128))])
def test_sdf_grid_levels_stop_at_the_detail_the_renders_can_show(render_resolution, levels):
    field = make_geometry("sdf", SDFConfig(), render_resolution)
    assert field.config.resolutions == levels and field.config.colour_resolutions == levels
    assert [g.shape[-1] for g in field.shape_grids] == list(levels)


def test_an_sdf_render_skips_its_empty_samples_without_changing_the_image():
    from blender_dreamfusion.backend.renderer import RenderConfig

    sphere, cameras = SphereSDF(0.45, beta=0.01), make_cameras([0.0, 120.0], [10.0, 40.0], 1.8, 50.0)
    full = render(sphere, cameras, 32, shading="lambertian", config=RenderConfig(cull_hidden=False))
    culled = render(sphere, cameras, 32, shading="lambertian")
    assert culled.evaluated < 0.25 * full.evaluated
    assert float((full.rgb - culled.rgb).abs().max()) < 0.02
    assert float((full.opacity - culled.opacity).abs().max()) < 0.02
