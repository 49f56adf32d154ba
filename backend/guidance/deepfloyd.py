"""DeepFloyd IF stage I: the open pixel-space prior closest to the Imagen model DreamFusion used.

It scores 64 x 64 renders directly (no VAE), reads prompts through a T5
encoder (with its attention mask, as IF was trained), runs on its own cosine
noise schedule (the scheduler config in the model folder), and predicts a
learned variance beside the noise: its UNet returns 6 channels and SDS takes
the first 3 (epsilon; PixelGuidance.predict_noise). Stages II and III are
upscalers, not priors. On a GPU its fp16 weights (`variant="fp16"`) are loaded
when the model has them: T5-XXL is 19 GB in fp32.
"""

from __future__ import annotations

import torch

from .base import ModelLoadError
from .pixel import PixelGuidance
from .registry import register_prior

#: IF's pipeline tokenises every prompt to this many T5 tokens.
IF_TOKENS = 77


@register_prior
class DeepFloydIFGuidance(PixelGuidance):
    prior_name = "deepfloyd-if"
    pipelines = ("IFPipeline",)

    @classmethod
    def from_parts(cls, model, index, parts, scheduler, device, dtype):
        unet = parts["unet"]
        channels, out = int(unet.config.in_channels), int(unet.config.out_channels)
        if out not in (channels, 2 * channels):
            raise ModelLoadError(f"model {model!r}: its UNet returns {out} channels for {channels} in; an IF "
                                 f"stage I UNet returns the noise ({channels}) and maybe a variance ({2 * channels})")
        if getattr(unet.config, "encoder_hid_dim", None) not in (None, parts["text_encoder"].config.d_model):
            raise ModelLoadError(f"model {model!r}: its UNet reads {unet.config.encoder_hid_dim}-wide text, its "
                                 f"text encoder makes {parts['text_encoder'].config.d_model}")
        return cls(unet, parts["text_encoder"], parts["tokenizer"], scheduler, device, dtype)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=IF_TOKENS, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device),
                                 attention_mask=tokens.attention_mask.to(self.device))[0]
