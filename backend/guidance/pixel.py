"""Pixel-space guidance: the UNet denoises RGB directly (DeepFloyd-IF-style models, the built-in prior)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import Guidance
from .latent import encode_with_tokenizer
from .registry import register_prior


@register_prior
class PixelGuidance(Guidance):
    """Any text-conditioned pixel-space UNet (no VAE): renders are resized to its input and scored directly."""

    prior_name = "pixel"
    space = "pixel"

    @classmethod
    def from_parts(cls, model, index, parts, scheduler, device, dtype):
        return cls(parts["unet"], parts["text_encoder"], parts["tokenizer"], scheduler, device, dtype)

    def __init__(self, unet, text_encoder, tokenizer, scheduler, device, dtype):
        super().__init__(scheduler, device, dtype)
        self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer
        self.input_size = int(unet.config.sample_size)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return (x * 2.0 - 1.0).to(self.dtype)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return encode_with_tokenizer(self.tokenizer, self.text_encoder, prompts, self.device)

    def predict_noise(self, x_t, t, text, cameras):
        out = self.unet(x_t, t, encoder_hidden_states=text.to(self.dtype)).sample
        return out[:, : x_t.shape[1]]  # models that also predict variance (IF) return 2x channels
