"""Camera-aware pixel guidance: the UNet also sees where the camera is (as Zero123 and MVDream do).

The camera's azimuth and elevation enter as sin/cos features through the
UNet's class embedding (`class_embed_type="projection"`), added to the
timestep embedding. Models declare this with `"_camera_conditioning":
"azimuth_elevation_sincos"` in model_index.json.
"""

from __future__ import annotations

import torch

from ..cameras import Cameras
from .pixel import PixelGuidance

CAMERA_CONDITIONING = "azimuth_elevation_sincos"


def camera_features(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """(B, 4): sin and cos of azimuth and elevation (degrees in, Blender's frame)."""
    az, el = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    return torch.stack([torch.sin(az), torch.cos(az), torch.sin(el), torch.cos(el)], dim=-1)


class CameraAwarePixelGuidance(PixelGuidance):
    kind = "pixel+camera"

    def predict_noise(self, x_t, t, text, cameras: Cameras | None):
        if cameras is None:
            raise ValueError("this prior is camera-aware: the SDS call must pass the cameras")
        features = camera_features(cameras.azimuth, cameras.elevation).to(device=x_t.device, dtype=self.dtype)
        out = self.unet(x_t, t, encoder_hidden_states=text.to(self.dtype), class_labels=features).sample
        return out[:, : x_t.shape[1]]
