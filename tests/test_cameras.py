"""Camera and light conventions in Blender's frame."""

import math

import pytest
import torch

from blender_dreamfusion.backend.cameras import camera_rays, make_cameras, sample_cameras, view_name
from blender_dreamfusion.shared import JobSpec


def test_azimuth_0_elevation_0_is_the_front_view_on_minus_y():
    cam = make_cameras(0.0, 0.0, 2.0, 50.0)
    assert torch.allclose(cam.positions[0], torch.tensor([0.0, -2.0, 0.0]), atol=1e-6)
    # Looking toward +Y with Z up on screen, X to the right.
    right, up, back = cam.rotations[0].T
    assert torch.allclose(-back, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(up, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(right, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_azimuth_90_is_the_right_view_and_elevation_90_is_overhead():
    assert torch.allclose(make_cameras(90.0, 0.0, 2.0, 50.0).positions[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    top = make_cameras(0.0, 90.0, 2.0, 50.0)
    assert torch.allclose(top.positions[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    right, up, _ = top.rotations[0].T
    assert torch.allclose(up, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # like Blender's top view
    assert torch.isfinite(top.rotations).all()


@pytest.mark.parametrize("az, el", [(0, 0), (37, 20), (-120, -10), (180, 60), (10, 90), (0, -90)])
def test_central_ray_hits_the_origin(az, el):
    cam = make_cameras(float(az), float(el), 1.7, 45.0)
    origins, dirs = camera_rays(cam, 33)  # odd size: the centre pixel's ray is the optical axis
    o, d = origins[0, 16 * 33 + 16], dirs[0, 16 * 33 + 16]
    closest = o - (o @ d) * d
    assert closest.norm() < 1e-5


def test_image_rows_run_top_down_and_columns_left_to_right():
    cam = make_cameras(0.0, 0.0, 2.0, 60.0)
    _, dirs = camera_rays(cam, 4)
    grid = dirs[0].reshape(4, 4, 3)
    assert grid[0, 0, 2] > grid[3, 0, 2]  # top row looks up (+Z)
    assert grid[0, 0, 0] < grid[0, 3, 0]  # left column looks toward -X


@pytest.mark.parametrize("az, el, name", [(0, 0, "front"), (40, 10, "front"), (90, 0, "side"), (-90, 30, "side"),
                                          (180, 0, "back"), (-150, 0, "back"), (200, 0, "back"), (0, 75, "overhead")])
def test_view_names(az, el, name):
    assert view_name(az, el) == name


def test_samples_respect_the_spec_ranges_and_light_offset():
    spec = JobSpec(prompt="x", camera_azimuth=(-30, 30), camera_elevation=(5, 15), camera_radius=(1.5, 1.6),
                   camera_fov=(40, 45), light_offset=20.0, light_distance=(2.0, 2.5))
    cams = sample_cameras(spec, 500, torch.Generator().manual_seed(0))
    assert cams.azimuth.min() >= -30 and cams.azimuth.max() <= 30
    assert cams.elevation.min() >= 5 and cams.elevation.max() <= 15
    assert cams.radius.min() >= 1.5 and cams.radius.max() <= 1.6
    assert math.degrees(cams.fov.min()) >= 40 - 1e-4 and math.degrees(cams.fov.max()) <= 45 + 1e-4
    cos = torch.nn.functional.cosine_similarity(cams.lights, cams.positions)
    assert cos.min() >= math.cos(math.radians(20)) - 1e-5
    distance = cams.lights.norm(dim=-1)
    assert distance.min() >= 2.0 - 1e-5 and distance.max() <= 2.5 + 1e-5
    spread = torch.acos(cos.clamp(-1, 1)).max()
    assert math.degrees(spread) > 15  # really spread over the cap, not stuck on the camera


def test_random_elevation_lights():
    spec = JobSpec(prompt="x", light_placement="random_elevation", light_elevation=(30, 40))
    cams = sample_cameras(spec, 200, torch.Generator().manual_seed(1))
    elevation = torch.rad2deg(torch.asin(cams.lights[:, 2] / cams.lights.norm(dim=-1)))
    assert elevation.min() >= 30 - 1e-3 and elevation.max() <= 40 + 1e-3
