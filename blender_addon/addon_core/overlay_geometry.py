"""What the next job will sample, as line segments for the viewport overlay.

Pure Python (no bpy, no numpy): `blender_addon/overlay.py` turns these
segments into cached GPU batches. Same frame and conventions as the backend's
camera sampling (`backend/cameras.py`): Z up, azimuth 0 puts the camera on -Y
(the front view), azimuth 90 on +X, elevation above the XY plane, degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

Vec3 = tuple[float, float, float]
Segment = tuple[Vec3, Vec3]

#: Half-width of the cube the field lives in (JobSpec: the scene is [-1, 1]^3).
SCENE_BOUND = 1.0
#: Arc resolution: one segment per this many degrees (at least 2 segments per arc).
ARC_STEP_DEG = 5.0
#: Meridians drawn inside an azimuth range, at most one per this many degrees.
MERIDIAN_STEP_DEG = 45.0
#: The sample frusta sit at this many azimuths across the range, each drawn at both fov ends.
FRUSTUM_AZIMUTHS = 3


@dataclass(frozen=True)
class SamplingRanges:
    """The JobSpec fields the overlay draws, each range ordered (low, high)."""

    camera_radius: tuple[float, float] = (1.5, 2.0)
    camera_elevation: tuple[float, float] = (-10.0, 90.0)
    camera_azimuth: tuple[float, float] = (-180.0, 180.0)
    camera_fov: tuple[float, float] = (40.0, 70.0)
    light_placement: str = "near_camera"
    light_distance: tuple[float, float] = (1.5, 3.0)
    light_offset: float = 45.0
    light_elevation: tuple[float, float] = (10.0, 80.0)

    @classmethod
    def from_values(cls, values: Mapping) -> "SamplingRanges":
        """From a JobSpec dict or the panel's values (unvalidated: a range typed high-to-low is reordered)."""
        def ordered(name):
            low, high = (float(v) for v in values[name])
            return (min(low, high), max(low, high))

        return cls(camera_radius=ordered("camera_radius"), camera_elevation=ordered("camera_elevation"),
                   camera_azimuth=ordered("camera_azimuth"), camera_fov=ordered("camera_fov"),
                   light_placement=str(values["light_placement"]), light_distance=ordered("light_distance"),
                   light_offset=float(values["light_offset"]), light_elevation=ordered("light_elevation"))

    @property
    def full_turn(self) -> bool:
        low, high = self.camera_azimuth
        return high - low >= 360.0 - 1e-6


@dataclass(frozen=True)
class OverlayGeometry:
    """Line segments by what they show; `groups()` is what the add-on draws, one colour each."""

    camera_band: tuple[Segment, ...]
    frusta: tuple[Segment, ...]
    front: tuple[Segment, ...]
    lights: tuple[Segment, ...]
    scene_cube: tuple[Segment, ...]
    #: Apexes of the sample frusta, with the fov each was drawn at (degrees).
    frustum_cameras: tuple[tuple[Vec3, float], ...]

    def groups(self, cameras: bool = True, lights: bool = True) -> dict[str, tuple[Segment, ...]]:
        out = {"scene_cube": self.scene_cube}
        if cameras:
            out.update(camera_band=self.camera_band, frusta=self.frusta, front=self.front)
        if lights:
            out["lights"] = self.lights
        return out


def spherical(azimuth_deg: float, elevation_deg: float, radius: float) -> Vec3:
    """The backend's `camera_position`, in plain floats."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (radius * math.cos(el) * math.sin(az), -radius * math.cos(el) * math.cos(az), radius * math.sin(el))


def _steps(low: float, high: float) -> list[float]:
    count = max(2, int(math.ceil((high - low) / ARC_STEP_DEG)))
    return [low + (high - low) * i / count for i in range(count + 1)]


def _polyline(points: list[Vec3]) -> list[Segment]:
    return list(zip(points[:-1], points[1:]))


def _ring(elevation: float, radius: float, azimuth: tuple[float, float]) -> list[Segment]:
    return _polyline([spherical(a, elevation, radius) for a in _steps(*azimuth)])


def _meridian(azimuth: float, elevation: tuple[float, float], radius: float) -> list[Segment]:
    return _polyline([spherical(azimuth, e, radius) for e in _steps(*elevation)])


def _meridian_azimuths(ranges: SamplingRanges) -> list[float]:
    low, high = ranges.camera_azimuth
    count = max(1, int(math.ceil((high - low) / MERIDIAN_STEP_DEG)))
    azimuths = [low + (high - low) * i / count for i in range(count + 1)]
    return azimuths[:-1] if ranges.full_turn else azimuths  # a full turn's last meridian is its first


def camera_band(ranges: SamplingRanges) -> list[Segment]:
    """The shell of camera positions: rings at both elevation ends on both radius ends, meridians across the
    azimuth range, and radial edges joining the inner shell to the outer one where the range has sides."""
    segments: list[Segment] = []
    for radius in ranges.camera_radius:
        for elevation in ranges.camera_elevation:
            segments += _ring(elevation, radius, ranges.camera_azimuth)
        for azimuth in _meridian_azimuths(ranges):
            segments += _meridian(azimuth, ranges.camera_elevation, radius)
    inner, outer = ranges.camera_radius
    sides = [] if ranges.full_turn else list(ranges.camera_azimuth)
    for azimuth in sides:
        for elevation in ranges.camera_elevation:
            segments.append((spherical(azimuth, elevation, inner), spherical(azimuth, elevation, outer)))
    return segments


def _look_at_origin(position: Vec3) -> tuple[Vec3, Vec3, Vec3]:
    """(right, up, forward) of a camera at `position` looking at the origin, Z up (+Y straight above/below,
    as the backend does)."""
    norm = math.sqrt(sum(c * c for c in position))
    forward = tuple(-c / norm for c in position)
    up_world = (0.0, 1.0, 0.0) if abs(forward[2]) > 0.999 else (0.0, 0.0, 1.0)
    right = _normalise(_cross(forward, up_world))
    return right, _cross(right, forward), forward


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _normalise(v: Vec3) -> Vec3:
    norm = math.sqrt(sum(c * c for c in v)) or 1.0
    return tuple(c / norm for c in v)


def frustum(position: Vec3, fov_deg: float) -> list[Segment]:
    """A square pyramid from the camera to the plane through the origin: how wide the camera sees there."""
    right, up, forward = _look_at_origin(position)
    depth = math.sqrt(sum(c * c for c in position))
    half = depth * math.tan(math.radians(fov_deg) / 2.0)
    centre = tuple(p + depth * f for p, f in zip(position, forward))
    corners = [tuple(c + sx * half * r + sy * half * u for c, r, u in zip(centre, right, up))
               for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return [(position, corner) for corner in corners] + _polyline(corners + corners[:1])


def frustum_cameras(ranges: SamplingRanges) -> list[tuple[Vec3, float]]:
    """A few cameras on the outer shell at mid elevation, across the azimuth range, each at both fov ends."""
    low, high = ranges.camera_azimuth
    count = FRUSTUM_AZIMUTHS
    if ranges.full_turn:
        azimuths = [low + (high - low) * (i + 0.5) / count for i in range(count)]
    else:
        azimuths = [low + (high - low) * i / (count - 1) for i in range(count)] if high > low else [low]
    elevation = sum(ranges.camera_elevation) / 2.0
    radius = ranges.camera_radius[1]
    return [(spherical(a, elevation, radius), fov) for a in azimuths for fov in ranges.camera_fov]


def front_marker(ranges: SamplingRanges) -> list[Segment]:
    """An arrow from the origin toward the front camera (azimuth 0, on -Y) at the inner radius, with a head."""
    tip = spherical(0.0, 0.0, ranges.camera_radius[0])
    head = 0.15 * ranges.camera_radius[0]
    return [((0.0, 0.0, 0.0), tip),
            (tip, (tip[0] - head, tip[1] + head, tip[2])), (tip, (tip[0] + head, tip[1] + head, tip[2])),
            (tip, (tip[0], tip[1] + head, tip[2] + head))]


def light_region(ranges: SamplingRanges, camera: Vec3) -> list[Segment]:
    """Where the point light can be.

    random_elevation: a band over every azimuth between the light elevations, at both distances.
    near_camera: the cap of half-angle light_offset around `camera`'s direction (the light follows each
    camera; one stands for all), as circles at both distances and lines joining them."""
    segments: list[Segment] = []
    if ranges.light_placement == "random_elevation":
        for distance in ranges.light_distance:
            for elevation in ranges.light_elevation:
                segments += _ring(elevation, distance, (-180.0, 180.0))
            for azimuth in range(-180, 180, 90):
                segments += _meridian(float(azimuth), ranges.light_elevation, distance)
        return segments
    axis = _normalise(camera)
    u = _normalise(_cross(axis, (0.0, 0.0, 1.0) if abs(axis[2]) < 0.9 else (1.0, 0.0, 0.0)))
    v = _cross(axis, u)
    offset = math.radians(min(ranges.light_offset, 179.0))
    rims = []
    for distance in ranges.light_distance:
        rim = []
        for phi in _steps(0.0, 360.0):
            p = math.radians(phi)
            direction = [math.cos(offset) * a + math.sin(offset) * (math.cos(p) * b + math.sin(p) * c)
                         for a, b, c in zip(axis, u, v)]
            rim.append(tuple(distance * d for d in direction))
        segments += _polyline(rim)
        rims.append(rim)
    step = max(1, (len(rims[0]) - 1) // 4)
    for i in range(0, len(rims[0]) - 1, step):
        segments.append((rims[0][i], rims[1][i]))
    near, far = (tuple(d * a for a in axis) for d in ranges.light_distance)
    segments.append((near, far))
    return segments


def scene_cube(bound: float = SCENE_BOUND) -> list[Segment]:
    corners = [(x, y, z) for x in (-bound, bound) for y in (-bound, bound) for z in (-bound, bound)]
    return [(a, b) for i, a in enumerate(corners) for b in corners[i + 1:]
            if sum(p != q for p, q in zip(a, b)) == 1]


def overlay_geometry(ranges: SamplingRanges, bound: float = SCENE_BOUND) -> OverlayGeometry:
    cameras = frustum_cameras(ranges)
    return OverlayGeometry(
        camera_band=tuple(camera_band(ranges)),
        frusta=tuple(s for position, fov in cameras for s in frustum(position, fov)),
        front=tuple(front_marker(ranges)),
        lights=tuple(light_region(ranges, cameras[len(cameras) // 2][0])),  # the middle sample camera
        scene_cube=tuple(scene_cube(bound)),
        frustum_cameras=tuple(cameras))
