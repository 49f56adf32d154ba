"""The viewport overlay's geometry (pure Python): it draws exactly the ranges the backend samples."""

from __future__ import annotations

import math
import random

import pytest
import torch

from blender_dreamfusion.backend.cameras import camera_position
from blender_dreamfusion.shared.jobspec import JobSpec
from blender_dreamfusion.addon_core.overlay_geometry import SamplingRanges, frustum, overlay_geometry, spherical

EPS = 1e-6


def _points(segments):
    return [p for segment in segments for p in segment]


def _polar(p):
    radius = math.sqrt(sum(c * c for c in p))
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, p[2] / radius))))
    azimuth = math.degrees(math.atan2(p[0], -p[1]))
    return radius, elevation, azimuth


def _in_azimuth(azimuth, low, high, tol=1e-4):
    if high - low >= 360.0 - EPS:
        return True
    return (azimuth - low + tol) % 360.0 <= (high - low) + 2 * tol


def _random_ranges(rng: random.Random) -> SamplingRanges:
    def pair(lo, hi):
        a, b = sorted(rng.uniform(lo, hi) for _ in range(2))
        return (a, b)

    az_low = rng.uniform(-360.0, 0.0)
    return SamplingRanges(camera_radius=pair(0.5, 20.0), camera_elevation=pair(-89.0, 89.0),
                          camera_azimuth=(az_low, az_low + rng.uniform(1.0, 360.0)), camera_fov=pair(5.0, 120.0),
                          light_placement=rng.choice(["near_camera", "random_elevation"]),
                          light_distance=pair(0.1, 100.0), light_offset=rng.uniform(0.0, 180.0),
                          light_elevation=pair(-89.0, 89.0))


RANGES = [SamplingRanges(), SamplingRanges(camera_azimuth=(-30.0, 30.0), camera_elevation=(0.0, 20.0)),
          SamplingRanges(camera_azimuth=(90.0, 450.0), camera_radius=(3.0, 3.0))] + \
         [_random_ranges(random.Random(seed)) for seed in range(20)]


def test_same_frame_as_the_backends_cameras():
    for az, el, r in ((0.0, 0.0, 2.0), (90.0, 30.0, 1.5), (-135.0, -20.0, 3.0)):
        expected = camera_position(torch.tensor(az), torch.tensor(el), torch.tensor(r)).tolist()
        assert spherical(az, el, r) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("ranges", RANGES)
def test_every_camera_position_lies_inside_the_ranges(ranges):
    geometry = overlay_geometry(ranges)
    points = _points(geometry.camera_band) + [p for p, _ in geometry.frustum_cameras]
    (r0, r1), (e0, e1), (a0, a1) = ranges.camera_radius, ranges.camera_elevation, ranges.camera_azimuth
    for p in points:
        radius, elevation, azimuth = _polar(p)
        assert r0 - 1e-6 <= radius <= r1 + 1e-6
        assert e0 - 1e-4 <= elevation <= e1 + 1e-4
        assert _in_azimuth(azimuth, a0, a1), (azimuth, a0, a1)


@pytest.mark.parametrize("ranges", RANGES)
def test_the_band_reaches_every_corner_of_the_ranges(ranges):
    points = _points(overlay_geometry(ranges).camera_band)
    for radius in ranges.camera_radius:
        for elevation in ranges.camera_elevation:
            for azimuth in ranges.camera_azimuth:
                corner = spherical(azimuth, elevation, radius)
                assert min(math.dist(corner, p) for p in points) < 1e-6


@pytest.mark.parametrize("ranges", RANGES)
def test_frusta_are_drawn_at_both_fov_ends(ranges):
    geometry = overlay_geometry(ranges)
    assert sorted({fov for _, fov in geometry.frustum_cameras}) == sorted(set(ranges.camera_fov))
    for position, fov in geometry.frustum_cameras:
        edges = [b for a, b in frustum(position, fov) if a == position]
        assert len(edges) == 4
        # Rays to the midpoints of opposite sides of the far square are fov apart.
        bottom = [(c0 + c1) / 2 for c0, c1 in zip(edges[0], edges[1])]
        top = [(c0 + c1) / 2 for c0, c1 in zip(edges[2], edges[3])]
        u = [b - p for b, p in zip(bottom, position)]
        v = [t - p for t, p in zip(top, position)]
        cos = sum(x * y for x, y in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))
        assert math.degrees(math.acos(max(-1.0, min(1.0, cos)))) == pytest.approx(fov, abs=1e-4)
        # ... and the far square is centred on the origin.
        centre = [sum(c[i] for c in edges) / 4 for i in range(3)]
        assert math.hypot(*centre) < 1e-6


def test_narrowing_a_range_narrows_the_drawing():
    wide = SamplingRanges()
    spans = {}
    for name, narrow in (("azimuth", SamplingRanges(camera_azimuth=(-30.0, 30.0))),
                         ("elevation", SamplingRanges(camera_elevation=(10.0, 20.0))),
                         ("radius", SamplingRanges(camera_radius=(1.8, 1.9)))):
        index = {"radius": 0, "elevation": 1, "azimuth": 2}[name]
        for label, ranges in (("wide", wide), ("narrow", narrow)):
            values = [_polar(p)[index] for p in _points(overlay_geometry(ranges).camera_band)]
            spans[name, label] = max(values) - min(values)
        assert spans[name, "narrow"] < 0.5 * spans[name, "wide"], name


def test_the_front_is_marked_on_minus_y():
    front = overlay_geometry(SamplingRanges()).front
    tip = front[0][1]
    assert tip[1] < 0 and abs(tip[0]) < 1e-9 and abs(tip[2]) < 1e-9


@pytest.mark.parametrize("ranges", RANGES)
def test_the_light_region_is_where_lights_are_sampled(ranges):
    lights = _points(overlay_geometry(ranges).lights)
    d0, d1 = ranges.light_distance
    for p in lights:
        distance, elevation, _ = _polar(p)
        assert d0 - 1e-6 <= distance <= d1 + 1e-6
        if ranges.light_placement == "random_elevation":
            assert ranges.light_elevation[0] - 1e-4 <= elevation <= ranges.light_elevation[1] + 1e-4
    if ranges.light_placement == "near_camera":
        geometry = overlay_geometry(ranges)
        axis = geometry.frustum_cameras[len(geometry.frustum_cameras) // 2][0]
        for p in lights:
            cos = sum(a * b for a, b in zip(axis, p)) / (math.hypot(*axis) * math.hypot(*p))
            assert math.degrees(math.acos(max(-1.0, min(1.0, cos)))) <= ranges.light_offset + 1e-3


def test_the_scene_cube_is_the_fields_cube():
    cube = overlay_geometry(SamplingRanges()).scene_cube
    assert len(cube) == 12
    assert all(math.dist(a, b) == pytest.approx(2.0) for a, b in cube)
    assert {abs(c) for p in _points(cube) for c in p} == {1.0}


def test_ranges_from_a_jobspec_and_from_unordered_panel_values():
    spec = JobSpec(prompt="x", seed=0, camera_azimuth=(-45.0, 45.0))
    assert SamplingRanges.from_values(spec.to_dict()).camera_azimuth == (-45.0, 45.0)
    values = {**spec.to_dict(), "camera_radius": [2.5, 1.5]}
    assert SamplingRanges.from_values(values).camera_radius == (1.5, 2.5)


def test_hiding_a_part_drops_its_groups():
    geometry = overlay_geometry(SamplingRanges())
    assert set(geometry.groups()) == {"scene_cube", "camera_band", "frusta", "front", "lights"}
    assert set(geometry.groups(cameras=False)) == {"scene_cube", "lights"}
    assert set(geometry.groups(lights=False)) == {"scene_cube", "camera_band", "frusta", "front"}
