"""Latent-space guidance: Stable Diffusion 1.x / 2.x (VAE + text-conditioned UNet) through diffusers."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import Guidance
from .registry import register_prior


@register_prior
class LatentGuidance(Guidance):
    """Stable Diffusion-style priors: renders are VAE-encoded (with gradient) and scored in latent space."""

    prior_name = "latent"
    space = "latent"
    components = ("unet", "text_encoder", "tokenizer", "vae")
    pipelines = ("StableDiffusionPipeline",)

    @classmethod
    def from_parts(cls, model, index, parts, scheduler, device, dtype):
        return cls(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], scheduler, device, dtype)

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, device, dtype):
        super().__init__(scheduler, device, dtype)
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.input_size = int(unet.config.sample_size) * self.vae_scale
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        # Resize to the VAE's native input and encode *with* gradient: SDS flows back through the encoder.
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x * 2.0 - 1.0).to(self.dtype)
        return self.vae.encode(x).latent_dist.mean * self.scaling_factor

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return encode_with_tokenizer(self.tokenizer, self.text_encoder, prompts, self.device)

    def predict_noise(self, x_t, t, text, cameras):
        return self.unet(x_t, t, encoder_hidden_states=text.to(self.dtype)).sample


def encode_with_tokenizer(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    max_length = tokenizer.model_max_length
    if not max_length or max_length > 100_000:  # "unset" in some tokenizer configs
        max_length = text_encoder.config.max_position_embeddings
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device))[0]
