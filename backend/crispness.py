"""How crisp a generated shape is: fog in its renders, whether its mesh matches them, how rough its skin is.

- soft share: among pixels of a render with opacity > 0.05, the share below 0.95. A solid object seen
  through one ray per pixel is 0 or 1 almost everywhere; fog is a high share.
- silhouette IoU: the mesh's silhouette against the volume render's (opacity > 0.5), from the same views.
  Low when the mesh was drawn at a level the renders do not show.
- roughness: mean angle between the normals of adjacent faces, degrees (a pitted skin is high; compare
  meshes extracted at the same resolution).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from blender_dreamfusion.shared import MeshData

from .cameras import Cameras, make_cameras
from .renderer import RenderConfig, render

#: Four views around the object at the toy prior's framing (azimuth, elevation).
VIEWS = ((-30.0, 20.0), (60.0, 20.0), (150.0, 20.0), (240.0, 45.0))
RESOLUTION = 64
SOLID, EMPTY = 0.95, 0.05
#: Four times the training renders' samples: a wall thinner than their spacing is still resolved.
METRIC_RENDER = RenderConfig(samples_per_ray=192, probes_per_ray=256)
#: The mesh is rasterised this many times finer, then each pixel takes its centre's majority.
SUPERSAMPLE = 4


def crispness_cameras(radius: float = 1.8, fov: float = 47.5) -> Cameras:
    az, el = zip(*VIEWS)
    return make_cameras(torch.tensor(az), torch.tensor(el), radius, fov)


@torch.no_grad()
def volume_opacity(field, occupancy=None, cameras: Cameras | None = None, resolution: int = RESOLUTION) -> np.ndarray:
    """(V, H, W) opacity of volume renders of `field`."""
    cameras = cameras or crispness_cameras()
    out = render(field, cameras, resolution, occupancy=occupancy, with_orientation=False, config=METRIC_RENDER)
    return out.opacity[:, 0].cpu().numpy()


def soft_share(opacity: np.ndarray) -> float:
    seen = opacity > EMPTY
    return float((seen & (opacity < SOLID)).sum() / max(1, seen.sum()))


def mesh_silhouettes(mesh: MeshData, cameras: Cameras | None = None, resolution: int = RESOLUTION) -> np.ndarray:
    """(V, H, W) bool: pixels whose centre the mesh covers, by rasterising its triangles."""
    cameras = cameras or crispness_cameras()
    fine = resolution * SUPERSAMPLE
    out = np.zeros((len(cameras), resolution, resolution), bool)
    if mesh.triangle_count == 0:
        return out
    points = mesh.positions.astype(np.float64)
    for v in range(len(cameras)):
        rotation = cameras.rotations[v].double().numpy()
        local = (points - cameras.positions[v].double().numpy()) @ rotation  # camera frame: x right, y up, -z ahead
        scale = np.tan(float(cameras.fov[v]) / 2.0)
        x = local[:, 0] / (-local[:, 2] * scale)
        y = local[:, 1] / (-local[:, 2] * scale)
        pixels = np.stack([(x + 1.0) / 2.0 * fine, (1.0 - y) / 2.0 * fine], axis=1)
        image = Image.new("L", (fine, fine), 0)
        draw = ImageDraw.Draw(image)
        for triangle in pixels[mesh.triangles]:
            draw.polygon([tuple(p) for p in triangle], fill=255)
        covered = np.asarray(image, dtype=np.float32).reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE)
        out[v] = covered.mean(axis=(1, 3)) > 127.5
    return out


def silhouette_iou(opacity: np.ndarray, silhouettes: np.ndarray) -> float:
    rendered = opacity > 0.5
    union = (rendered | silhouettes).sum()
    return float((rendered & silhouettes).sum() / union) if union else 0.0


def roughness_degrees(mesh: MeshData) -> float:
    import trimesh

    if mesh.triangle_count < 2:
        return float("nan")
    tri = trimesh.Trimesh(mesh.positions.astype(np.float64), mesh.triangles, process=False)
    angles = tri.face_adjacency_angles
    return float(np.degrees(angles).mean()) if len(angles) else float("nan")


def crispness(field, mesh: MeshData, occupancy=None) -> dict[str, float]:
    """The three figures for one generated field and the mesh drawn from it."""
    cameras = crispness_cameras()
    opacity = volume_opacity(field, occupancy, cameras)
    return {"soft_share": round(soft_share(opacity), 4),
            "silhouette_iou": round(silhouette_iou(opacity, mesh_silhouettes(mesh, cameras)), 4),
            "roughness_deg": round(roughness_degrees(mesh), 2)}
