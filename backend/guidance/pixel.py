"""Pixel-space guidance: the UNet denoises RGB directly (DeepFloyd-IF-style models, the built-in prior)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import Guidance, ModelLoadError
from .latent import encode_with_tokenizer
from .registry import register_prior


@register_prior
class PixelGuidance(Guidance):
    """Any text-conditioned pixel-space UNet (no VAE): renders are resized to its input and scored directly."""

    prior_name = "pixel"
    space = "pixel"

    @classmethod
    def from_parts(cls, model, index, parts, scheduler, device, dtype):
        return cls(parts["unet"], parts["text_encoder"], parts["tokenizer"], scheduler, device, dtype,
                   patch=patch_size(model, index, parts["unet"]))

    def __init__(self, unet, text_encoder, tokenizer, scheduler, device, dtype, patch: int = 1):
        super().__init__(scheduler, device, dtype)
        self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer
        self.patch = patch
        self.input_size = int(unet.config.sample_size) * patch

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return (x * 2.0 - 1.0).to(self.dtype)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return encode_with_tokenizer(self.tokenizer, self.text_encoder, prompts, self.device)

    def predict_noise(self, x_t, t, text, cameras):
        return self.run_unet(x_t, t, text)

    def run_unet(self, x_t, t, text, class_labels=None):
        """The UNet's noise for x_t, through its patches when it has them."""
        x = F.pixel_unshuffle(x_t, self.patch) if self.patch > 1 else x_t
        out = self.unet(x, t, encoder_hidden_states=text.to(self.dtype), class_labels=class_labels).sample
        out = out[:, : x.shape[1]]  # models that also predict variance (IF) return 2x channels
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


def patch_size(model: str, index: dict, unet) -> int:
    """model_index.json's `_patch_size` p: the UNet sees each p x p block of pixels as one position with
    3 p^2 channels (space-to-depth, as DiT's patches): a 64 px prior at the cost of a 32 px UNet. It is a
    fixed reordering of the pixels, so noise stays i.i.d. per channel and the diffusion maths is unchanged."""
    patch = index.get("_patch_size", 1)
    if not isinstance(patch, int) or isinstance(patch, bool) or not 1 <= patch <= 8:
        raise ModelLoadError(f"model {model!r}: _patch_size must be an integer from 1 to 8, got {patch!r}")
    channels = 3 * patch * patch
    if int(unet.config.in_channels) != channels:
        raise ModelLoadError(f"model {model!r}: a UNet on {patch}x{patch} patches takes {channels} "
                             f"channels, but this one takes {unet.config.in_channels}")
    # Noise only, or noise and variance (IF): the first `channels` are the noise.
    if patch > 1 and int(unet.config.out_channels) not in (channels, 2 * channels):
        raise ModelLoadError(f"model {model!r}: a UNet on {patch}x{patch} patches gives {channels} (or, with "
                             f"variance, {2 * channels}) channels, but this one gives {unet.config.out_channels}")
    return patch
