"""Volume rendering against analytic answers."""

import math

import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.geometry import DensityField
from blender_dreamfusion.backend.occupancy import OccupancyGrid
from blender_dreamfusion.backend.renderer import render
from tests.helpers.fields import EmptyField, SphereField


def test_sphere_renders_a_disc_of_the_projected_radius():
    radius, distance, fov, res = 0.5, 2.0, 60.0, 64
    out = render(SphereField(radius, sharpness=1e5), make_cameras(0.0, 0.0, distance, fov), res)
    area = float((out.opacity > 0.5).sum())
    measured = math.sqrt(area / math.pi)
    # Silhouette of a sphere: angular radius asin(r/d), projected with tan over tan(fov/2).
    expected = math.tan(math.asin(radius / distance)) / math.tan(math.radians(fov) / 2) * res / 2
    assert abs(measured - expected) < 1.0
    assert float(out.opacity[0, 0, res // 2, res // 2]) > 0.99
    centre_depth = float(out.depth[0, 0, res // 2, res // 2])
    assert abs(centre_depth - (distance - radius)) < 0.05


def test_empty_space_is_transparent_and_shows_the_background():
    background = torch.tensor([[0.2, 0.4, 0.6]])
    out = render(EmptyField(), make_cameras(30.0, 20.0, 2.0, 50.0), 32, background=background)
    assert float(out.opacity.max()) < 1e-6
    assert torch.allclose(out.rgb[0].permute(1, 2, 0), background[0].expand(32, 32, 3), atol=1e-6)


def test_shading_modes():
    sphere = SphereField(0.5, colour=(0.9, 0.2, 0.1))
    cam = make_cameras(0.0, 0.0, 2.0, 50.0, lights=[[0.0, -3.0, 0.0]])  # light behind the camera
    kwargs = dict(ambient=0.2, background=torch.zeros(1, 3))
    albedo = render(sphere, cam, 33, shading="albedo", **kwargs).rgb[0, :, 16, 16]
    lit = render(sphere, cam, 33, shading="lambertian", **kwargs).rgb[0, :, 16, 16]
    plain = render(sphere, cam, 33, shading="textureless", **kwargs).rgb[0, :, 16, 16]
    assert torch.allclose(albedo, torch.tensor([0.9, 0.2, 0.1]), atol=1e-3)
    assert torch.allclose(lit, albedo, atol=0.02)  # facing the light: a + (1 - a) * 1 = 1
    assert torch.allclose(plain, torch.ones(3), atol=0.02)  # white albedo
    side = make_cameras(0.0, 0.0, 2.0, 50.0, lights=[[3.0, 0.0, 0.0]])  # light from +X
    image = render(sphere, side, 33, shading="textureless", **kwargs).rgb[0, 0]
    assert image[16, 24] > image[16, 8] + 0.3  # the +X half is lit, the -X half only ambient
    assert abs(float(image[16, 8]) - 0.2) < 0.05


def test_occupancy_skipping_changes_nothing_visible_and_skips_most_samples():
    torch.manual_seed(0)
    field = DensityField()
    cam = make_cameras(20.0, 15.0, 1.8, 50.0)
    grid = OccupancyGrid(field.bound, 64)
    grid.update(field.density, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = render(field, cam, 32, shading="lambertian")
        skipped = render(field, cam, 32, shading="lambertian", occupancy=grid)
    # Only the faintest fog (density under the occupancy threshold) goes missing.
    assert float((full.rgb - skipped.rgb).abs().max()) < 0.02
    assert float((full.rgb - skipped.rgb).abs().mean()) < 1e-3
    # Rays that miss every occupied cell cost nothing; the others spend their samples where things are.
    assert skipped.evaluated < 0.8 * full.evaluated


def test_gradients_reach_the_field_through_every_shading():
    field = DensityField()
    cam = make_cameras(0.0, 10.0, 1.8, 50.0)
    for shading in ("albedo", "lambertian", "textureless"):
        field.zero_grad()
        out = render(field, cam, 16, shading=shading, generator=torch.Generator().manual_seed(0))
        (out.rgb.mean() + out.orientation).backward()
        assert any(float(g.grad.abs().sum()) > 0 for g in field.grids), shading


def test_field_normals_point_outward_from_the_blob():
    field = DensityField()
    points = torch.tensor([[0.3, 0.0, 0.0], [0.0, -0.3, 0.0], [0.0, 0.0, 0.3], [-0.2, 0.2, -0.1]])
    normals = field.normals(points)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert (torch.nn.functional.cosine_similarity(normals, points) > 0.95).all()


def test_hidden_samples_are_culled_without_changing_the_image():
    from blender_dreamfusion.backend.renderer import RenderConfig

    sphere = SphereField(0.5, sharpness=1e4)
    cam = make_cameras(0.0, 0.0, 2.0, 50.0)
    with torch.no_grad():
        plain = render(sphere, cam, 32, shading="lambertian", config=RenderConfig(cull_hidden=False))
        culled = render(sphere, cam, 32, shading="lambertian", config=RenderConfig(cull_hidden=True))
    assert culled.culled > 0.1 * plain.evaluated and culled.evaluated + culled.culled == plain.evaluated
    assert float((plain.rgb - culled.rgb).abs().max()) < 1e-3
