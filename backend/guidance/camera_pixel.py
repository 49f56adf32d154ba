"""Camera-aware pixel guidance: the UNet also sees where the camera is (as Zero123 and MVDream do).

The camera's azimuth and elevation enter as sin/cos features through the
UNet's class embedding (`class_embed_type="projection"`), added to the
timestep embedding. Models declare which features they were trained on with
`"_camera_conditioning"` in model_index.json (one of `CAMERA_CONDITIONINGS`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..cameras import Cameras
from .base import ModelLoadError
from .pixel import PixelGuidance, patch_size
from .registry import register_prior


def _sincos(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    az, el = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    return torch.stack([torch.sin(az), torch.cos(az), torch.sin(el), torch.cos(el)], dim=-1)


def _harmonics(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    # A cube looks the same every 90 degrees of azimuth: a 4th harmonic that a small embedding MLP failed to
    # build from sin/cos(az) alone (the first prior drew the same square from 0 and 45 degrees). Giving it
    # directly, with the 2nd for shapes symmetric every 180 degrees, lets the prior tell a face from a corner.
    az, el = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    return torch.stack([torch.sin(az), torch.cos(az), torch.sin(2 * az), torch.cos(2 * az),
                        torch.sin(4 * az), torch.cos(4 * az), torch.sin(el), torch.cos(el)], dim=-1)


#: model_index.json's `_camera_conditioning` value -> the features its UNet was trained on (B,) x 2 -> (B, D).
CAMERA_CONDITIONINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "azimuth_elevation_sincos": _sincos,
    "azimuth_harmonics_elevation_sincos": _harmonics,
}
#: What the training script writes now.
CAMERA_CONDITIONING = "azimuth_harmonics_elevation_sincos"


def camera_features(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor,
                    conditioning: str = CAMERA_CONDITIONING) -> torch.Tensor:
    """(B, D) features of the named conditioning (degrees in, Blender's frame)."""
    return CAMERA_CONDITIONINGS[conditioning](azimuth_deg, elevation_deg)


def feature_size(conditioning: str) -> int:
    return int(camera_features(torch.zeros(1), torch.zeros(1), conditioning).shape[-1])


@register_prior
class CameraAwarePixelGuidance(PixelGuidance):
    """Pixel guidance whose UNet also takes the camera's features as its class embedding."""

    prior_name = "camera-pixel"

    @classmethod
    def from_parts(cls, model, index, parts, scheduler, device, dtype):
        camera = index.get("_camera_conditioning")
        if camera not in CAMERA_CONDITIONINGS:
            raise ModelLoadError(f"model {model!r} wants camera conditioning {camera!r}; this backend knows "
                                 f"{', '.join(map(repr, CAMERA_CONDITIONINGS))}")
        expected, made = parts["unet"].config.get("projection_class_embeddings_input_dim"), feature_size(camera)
        if expected != made:
            raise ModelLoadError(f"model {model!r}: its UNet takes {expected} camera features, but {camera!r} "
                                 f"makes {made}")
        return cls(parts["unet"], parts["text_encoder"], parts["tokenizer"], scheduler, device, dtype,
                   conditioning=camera, patch=patch_size(model, index, parts["unet"]))

    def __init__(self, unet, text_encoder, tokenizer, scheduler, device, dtype,
                 conditioning: str = CAMERA_CONDITIONING, patch: int = 1):
        super().__init__(unet, text_encoder, tokenizer, scheduler, device, dtype, patch=patch)
        self.conditioning = conditioning

    def predict_noise(self, x_t, t, text, cameras: Cameras | None):
        if cameras is None:
            raise ValueError("this prior is camera-aware: the SDS call must pass the cameras")
        features = camera_features(cameras.azimuth, cameras.elevation, self.conditioning)
        return self.run_unet(x_t, t, text, features.to(device=x_t.device, dtype=self.dtype))
