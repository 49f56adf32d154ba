"""The guidance interface and the Score Distillation Sampling loss shared by every prior.

A prior supplies three things: how to turn renders into its input space
(`prepare`), how to embed text (`_encode_text`; `embed_text` caches it) and its noise prediction
(`predict_noise`), plus which model parts it needs (`components`) and how
it is built from them (`from_parts`). SDS itself is written once, here.
A new prior is a new module in this package whose class is decorated with
`registry.register_prior` (see registry.py for how a model names it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..cameras import Cameras


@dataclass
class SDSResult:
    loss: torch.Tensor       # differentiable surrogate; d loss / d input == w(t) * (eps_hat - eps)
    value: float             # 0.5 * |grad|^2 summed, for reporting
    timesteps: torch.Tensor  # (B,) the sampled t


class ModelLoadError(RuntimeError):
    """The prior could not be loaded; the message says which model and what to do."""


class Guidance(ABC):
    """A frozen diffusion prior that scores renders."""

    #: The registry name (`registry.PRIORS`): what a model_index.json's `_prior` names.
    prior_name: ClassVar[str] = ""
    #: Where the UNet denoises: "latent" (through a VAE) or "pixel" (the render itself).
    space: ClassVar[Literal["latent", "pixel"]]
    #: The model_index.json parts `from_parts` is given, loaded (the scheduler is always read as well).
    components: ClassVar[tuple[str, ...]] = ("unet", "text_encoder", "tokenizer")
    #: diffusers pipeline `_class_name`s this prior answers for when a model names no `_prior`.
    pipelines: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_parts(cls, model: str, index: dict[str, Any], parts: dict[str, Any], scheduler,
                   device: torch.device, dtype: torch.dtype) -> "Guidance":
        """The prior for `model` from its loaded `components` (raise ModelLoadError when they do not fit).
        Every registered prior gives one; a prior built in code (a test's) need not."""
        raise NotImplementedError(f"{cls.__name__} is not built from a model folder")

    def __init__(self, scheduler, device: torch.device, dtype: torch.dtype):
        self.scheduler = scheduler
        self.device = device
        self.dtype = dtype
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self._text_cache: dict[str, torch.Tensor] = {}

    # --- what a prior provides ------------------------------------------------

    @abstractmethod
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) renders in [0, 1] -> the model's input x0 (differentiable)."""

    @abstractmethod
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings for the prompts, (B, L, D)."""

    @abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cameras: Cameras | None) -> torch.Tensor:
        """The model's noise prediction. Camera-aware priors use `cameras` (repeated to match x_t)."""

    # --- hooks a prior may override --------------------------------------------

    def check_prompt(self, prompt: str) -> None:
        """Raise ValueError with a user-facing message if this prior cannot follow `prompt`."""

    def condition_prompt(self, prompt: str, shading: str) -> str:
        """The prompt to score a render of the given shading against (e.g. drop colour when textureless)."""
        return prompt

    # --- shared ---------------------------------------------------------------

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings, cached per prompt string (view suffixes make a handful of distinct ones)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            for prompt, emb in zip(missing, self._encode_text(missing)):
                self._text_cache[prompt] = emb
        return torch.stack([self._text_cache[p] for p in prompts])

    def sample_timesteps(self, n: int, t_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
        low = int(t_range[0] * (self.num_train_timesteps - 1))
        high = int(t_range[1] * (self.num_train_timesteps - 1))
        return torch.randint(low, high + 1, (n,), generator=generator)

    def sds(self, images: torch.Tensor, prompts: list[str], negative_prompts: list[str], guidance_scale: float,
            t_range: tuple[float, float], generator: torch.Generator, cameras: Cameras | None = None) -> SDSResult:
        """DreamFusion's SDS: grad = w(t) (eps_hat(x_t; y, t) - eps), w(t) = 1 - alpha_bar_t, CFG on eps_hat."""
        x = self.prepare(images)
        b = x.shape[0]
        t = self.sample_timesteps(b, t_range, generator)
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        t_dev = t.to(self.device)
        with torch.no_grad():
            alpha_bar = self.alphas_cumprod[t_dev].view(-1, 1, 1, 1)
            x_t = alpha_bar.sqrt() * x.detach().float() + (1.0 - alpha_bar).sqrt() * noise.float()
            text = torch.cat([self.embed_text(negative_prompts), self.embed_text(prompts)])
            both = self.predict_noise(torch.cat([x_t, x_t]).to(self.dtype), torch.cat([t_dev, t_dev]), text,
                                      _repeat(cameras)).float()
            eps_uncond, eps_cond = both.chunk(2)
            eps_hat = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            grad = torch.nan_to_num((1.0 - alpha_bar) * (eps_hat - noise.float()), nan=0.0, posinf=0.0, neginf=0.0)
            target = x.detach().float() - grad
        loss = 0.5 * ((x.float() - target) ** 2).sum()
        return SDSResult(loss=loss, value=float(0.5 * (grad**2).sum()), timesteps=t)


def _repeat(cameras: Cameras | None) -> Cameras | None:
    if cameras is None:
        return None
    return Cameras(*(torch.cat([getattr(cameras, f)] * 2) for f in cameras.__dataclass_fields__))
