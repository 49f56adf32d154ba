"""Camera and light sampling in Blender's world frame.

Z is up. Azimuth 0 puts the camera on -Y looking toward +Y (Blender's front
view); azimuth 90 puts it on +X (the right view); elevation is the angle
above the XY plane. Cameras look at the origin. The camera frame follows
Blender/OpenGL: x right, y up, looking down -z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from blender_dreamfusion.shared import JobSpec

#: View-dependent prompt suffixes, as in DreamFusion.
OVERHEAD_ELEVATION = 60.0
FRONT_HALF_ANGLE = 45.0
BACK_HALF_ANGLE = 45.0
VIEW_SUFFIXES = ("front", "side", "back", "overhead")


@dataclass
class Cameras:
    """A batch of B pinhole cameras (square images) with their sampled lights."""

    positions: torch.Tensor   # (B, 3)
    rotations: torch.Tensor   # (B, 3, 3): columns are the camera's x (right), y (up), z (back) axes
    fov: torch.Tensor         # (B,) vertical field of view, radians
    azimuth: torch.Tensor     # (B,) degrees, in (-180, 180]
    elevation: torch.Tensor   # (B,) degrees
    radius: torch.Tensor      # (B,)
    lights: torch.Tensor      # (B, 3) point-light positions

    def __len__(self) -> int:
        return self.positions.shape[0]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def view_names(self) -> list[str]:
        return [view_name(float(a), float(e)) for a, e in zip(self.azimuth, self.elevation)]


def view_name(azimuth_deg: float, elevation_deg: float) -> str:
    if elevation_deg >= OVERHEAD_ELEVATION:
        return "overhead"
    azimuth = abs(wrap_degrees(azimuth_deg))
    if azimuth <= FRONT_HALF_ANGLE:
        return "front"
    if azimuth >= 180.0 - BACK_HALF_ANGLE:
        return "back"
    return "side"


def wrap_degrees(angle: float | torch.Tensor):
    """Into (-180, 180]."""
    return 180.0 - (180.0 - angle) % 360.0


def camera_position(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return torch.stack([radius * torch.cos(el) * torch.sin(az),
                        -radius * torch.cos(el) * torch.cos(az),
                        radius * torch.sin(el)], dim=-1)


def look_at_origin(positions: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) camera-to-world rotations looking from `positions` at the origin, Z up."""
    forward = torch.nn.functional.normalize(-positions, dim=-1)
    up_world = torch.zeros_like(positions)
    up_world[:, 2] = 1.0
    # Straight above or below, Z is parallel to the view: use +Y, as Blender's top view does.
    vertical = forward[:, 2].abs() > 0.999
    up_world[vertical] = torch.tensor([0.0, 1.0, 0.0], dtype=positions.dtype, device=positions.device)
    right = torch.nn.functional.normalize(torch.cross(forward, up_world, dim=-1), dim=-1)
    up = torch.cross(right, forward, dim=-1)
    return torch.stack([right, up, -forward], dim=-1)


def make_cameras(azimuth_deg, elevation_deg, radius, fov_deg, lights=None) -> Cameras:
    """Cameras at given angles (1-D tensors or floats), looking at the origin."""
    az, el, r, fov = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in
                      (azimuth_deg, elevation_deg, radius, fov_deg))
    az, el, r, fov = torch.broadcast_tensors(az, el, r, fov)
    positions = camera_position(az, el, r)
    lights = positions.clone() if lights is None else torch.as_tensor(lights, dtype=torch.float32).reshape(-1, 3)
    return Cameras(positions, look_at_origin(positions), torch.deg2rad(fov), wrap_degrees(az), el, r, lights)


def _uniform(low_high: tuple[float, float], n: int, generator: torch.Generator) -> torch.Tensor:
    low, high = low_high
    return low + (high - low) * torch.rand(n, generator=generator)


def sample_cameras(spec: JobSpec, n: int, generator: torch.Generator) -> Cameras:
    """n random cameras and lights from the JobSpec ranges (on the CPU; move with `.to`)."""
    az = _uniform(spec.camera_azimuth, n, generator)
    el = _uniform(spec.camera_elevation, n, generator)
    r = _uniform(spec.camera_radius, n, generator)
    fov = _uniform(spec.camera_fov, n, generator)
    cams = make_cameras(az, el, r, fov)
    cams.lights = sample_lights(spec, cams.positions, generator)
    return cams


def sample_lights(spec: JobSpec, camera_positions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = camera_positions.shape[0]
    distance = _uniform(spec.light_distance, n, generator)
    if spec.light_placement == "random_elevation":
        az = _uniform((-180.0, 180.0), n, generator)
        el = _uniform(spec.light_elevation, n, generator)
        return camera_position(az, el, distance)
    # near_camera: uniform on the spherical cap of half-angle light_offset around the camera direction.
    axis = torch.nn.functional.normalize(camera_positions, dim=-1)
    cos_max = math.cos(math.radians(spec.light_offset))
    cos_t = 1.0 - (1.0 - cos_max) * torch.rand(n, generator=generator)
    sin_t = torch.sqrt((1.0 - cos_t**2).clamp_min(0.0))
    phi = 2.0 * math.pi * torch.rand(n, generator=generator)
    helper = torch.where(axis[:, 2:3].abs() < 0.9, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]))
    u = torch.nn.functional.normalize(torch.cross(axis, helper, dim=-1), dim=-1)
    v = torch.cross(axis, u, dim=-1)
    direction = cos_t[:, None] * axis + sin_t[:, None] * (torch.cos(phi)[:, None] * u + torch.sin(phi)[:, None] * v)
    return direction * distance[:, None]


def camera_rays(cameras: Cameras, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, (B, H*W, 3), rows from the top of the image."""
    device = cameras.positions.device
    pixel = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * 2.0 - 1.0
    y, x = torch.meshgrid(-pixel, pixel, indexing="ij")  # row 0 is the top
    scale = torch.tan(cameras.fov / 2.0)[:, None, None]
    xs, ys = x[None] * scale, y[None] * scale
    dirs_cam = torch.stack([xs, ys, -torch.ones_like(xs)], dim=-1).reshape(len(cameras), -1, 3)
    dirs = torch.nn.functional.normalize(torch.einsum("bij,bnj->bni", cameras.rotations, dirs_cam), dim=-1)
    origins = cameras.positions[:, None, :].expand_as(dirs)
    return origins, dirs
