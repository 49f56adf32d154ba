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
from .perp_neg import PerpNeg, perp_neg_guidance, view_terms


#: Noise levels (shares of the schedule) at which the judge compares prompts: coarse shape shows at the high
#: ones, colour and detail at the low ones (Diffusion Classifier averages over many; a few fixed ones rank alike).
JUDGE_TIMESTEPS = (0.1, 0.3, 0.5, 0.7)
#: Renders per UNet batch when judging (classes are grouped to about this many).
JUDGE_BATCH = 64


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
        self.prediction_type = str(getattr(scheduler.config, "prediction_type", "epsilon"))
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

    def alternatives(self, prompt: str) -> list[str]:
        """Prompts a result of `prompt` could be mistaken for, for the judge (`judge`): none for an open
        vocabulary (the judge always weighs the unconditional and the negative prompt); a closed vocabulary names
        its nearest neighbours (the toy priors: the same object in the other colours, the other objects in this
        colour). View suffixes are added by the caller."""
        return []

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
            t_range: tuple[float, float], generator: torch.Generator, cameras: Cameras | None = None,
            perp_neg: PerpNeg | None = None, opacity: torch.Tensor | None = None) -> SDSResult:
        """DreamFusion's SDS: grad = w(t) (eps_hat(x_t; y, t) - eps), w(t) = 1 - alpha_bar_t, eps_hat guided by
        `guided_noise` (classifier-free guidance unless the prior says otherwise). `opacity` (B, 1, H, W): how
        much of each pixel of `images` the object covers, for a prior that guides parts of the prompt only where
        the object is (toy_objects.py); the others ignore it.

        With `perp_neg` (strength > 0) the positive is the view prompts blended by each camera's azimuth and
        eps_hat is `perp_neg_noise`'s (Perp-Neg's, perp_neg.py, unless the prior says otherwise); `prompts` are
        then not used.
        """
        x = self.prepare(images)
        b = x.shape[0]
        t = self.sample_timesteps(b, t_range, generator)
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        t_dev = t.to(self.device)
        with torch.no_grad():
            alpha_bar = self.alphas_cumprod[t_dev].view(-1, 1, 1, 1)
            x_t = alpha_bar.sqrt() * x.detach().float() + (1.0 - alpha_bar).sqrt() * noise.float()
            uncond = self.embed_text(negative_prompts)
            if perp_neg is not None and perp_neg.strength > 0:
                eps_hat = self.perp_neg_noise(x_t, t_dev, uncond, guidance_scale, cameras, perp_neg, generator,
                                              opacity)
            else:
                eps_hat = self.guided_noise(x_t, t_dev, uncond, prompts, guidance_scale, cameras, generator, opacity)
            grad = torch.nan_to_num((1.0 - alpha_bar) * (eps_hat - noise.float()), nan=0.0, posinf=0.0, neginf=0.0)
            target = x.detach().float() - grad
        loss = 0.5 * ((x.float() - target) ** 2).sum()
        return SDSResult(loss=loss, value=float(0.5 * (grad**2).sum()), timesteps=t)

    @torch.no_grad()
    def judge(self, images: torch.Tensor, classes: list[list[str]], cameras: Cameras | None,
              generator: torch.Generator, timesteps: tuple[float, ...] = JUDGE_TIMESTEPS) -> torch.Tensor:
        """How much better the first of `classes` explains each render than the best of the others (B,): the
        relative margin (min_c>0 E_c - E_0) / E_0 of the denoising errors E (`denoising_errors`), as Diffusion
        Classifier (Li et al., ICCV 2023) tells classes apart. Positive: the prompt is the best explanation.
        `classes`: C lists of B prompts (one per render: view suffixes differ), the prompt first. Best of N
        ranks candidates by it; a prior may judge otherwise."""
        errors = self.denoising_errors(images, classes, cameras, generator, timesteps)
        return (errors[:, 1:].min(dim=1).values - errors[:, 0]) / errors[:, 0].clamp_min(1e-12)

    @torch.no_grad()
    def denoising_errors(self, images: torch.Tensor, classes: list[list[str]], cameras: Cameras | None,
                         generator: torch.Generator, timesteps: tuple[float, ...] = JUDGE_TIMESTEPS) -> torch.Tensor:
        """(B, C) mean squared error of the noise prediction for each render under each class of prompts, over
        `timesteps` (shares of the schedule), each with one noise draw from `generator` shared by every class:
        the same generator state gives every candidate the same noise."""
        x = self.prepare(images).float()
        b, n = x.shape[0], len(classes)
        texts = [self.embed_text(prompts) for prompts in classes]
        errors = torch.zeros(b, n, device=x.device)
        group = max(1, JUDGE_BATCH // b)  # classes per UNet batch
        for share in timesteps:
            t = torch.full((b,), int(share * (self.num_train_timesteps - 1)), dtype=torch.long, device=self.device)
            noise = torch.randn(x.shape, generator=generator).to(device=x.device)
            alpha_bar = self.alphas_cumprod[t].view(-1, *([1] * (x.ndim - 1)))
            x_t = alpha_bar.sqrt() * x + (1.0 - alpha_bar).sqrt() * noise
            for first in range(0, n, group):
                eps = self.noise_per_text(x_t, t, texts[first:first + group], cameras)
                for c, predicted in enumerate(eps, start=first):
                    errors[:, c] += ((predicted - noise) ** 2).flatten(1).mean(dim=1)
        return errors / len(timesteps)

    def guided_noise(self, x_t: torch.Tensor, t: torch.Tensor, uncond: torch.Tensor, prompts: list[str],
                     guidance_scale: float, cameras: Cameras | None, generator: torch.Generator,
                     opacity: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guidance: eps_uncond + scale (eps_cond - eps_uncond). A prior may guide otherwise
        (toy_objects.py guides its colour word only inside the object); `generator` is the run's, for any draw
        it needs; `opacity` the render's coverage (see `sds`), or None."""
        eps_uncond, eps_cond = self.noise_per_text(x_t, t, [uncond, self.embed_text(prompts)], cameras)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    def noise_per_text(self, x_t: torch.Tensor, t: torch.Tensor, texts: list[torch.Tensor],
                       cameras: Cameras | None) -> list[torch.Tensor]:
        """`noise` of the same x_t under each of `texts` (each (B, L, D)), in one batch through the UNet."""
        k, b = len(texts), x_t.shape[0]
        out = self.noise(torch.cat([x_t] * k), torch.cat([t] * k), torch.cat(texts),
                         _select(cameras, torch.arange(b).repeat(k)))
        return list(out.chunk(k))

    def noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, cameras: Cameras | None) -> torch.Tensor:
        """The model's epsilon for float x_t, whatever it predicts (v-prediction models, SD 2.x at 768 px,
        are converted: eps = sqrt(ab) v + sqrt(1 - ab) x_t)."""
        out = self.predict_noise(x_t.to(self.dtype), t, text, cameras).float()
        if self.prediction_type == "v_prediction":
            alpha_bar = self.alphas_cumprod[t].view(-1, *([1] * (x_t.ndim - 1)))
            out = alpha_bar.sqrt() * out + (1.0 - alpha_bar).sqrt() * x_t.float()
        return out

    def perp_neg_noise(self, x_t: torch.Tensor, t: torch.Tensor, uncond: torch.Tensor, scale: float,
                       cameras: Cameras | None, perp_neg: PerpNeg, generator: torch.Generator,
                       opacity: torch.Tensor | None = None) -> torch.Tensor:
        """Perp-Neg's eps_hat (perp_neg.py). A prior may guide otherwise, as with `guided_noise`."""
        eps_uncond, (eps_positive,), eps_negatives, weights = self.perp_neg_terms(
            x_t, t, uncond, cameras, perp_neg.strength, [perp_neg.view_prompts])
        return perp_neg_guidance(eps_uncond, eps_positive, eps_negatives, weights, scale)

    def perp_neg_terms(self, x_t: torch.Tensor, t: torch.Tensor, uncond: torch.Tensor, cameras: Cameras | None,
                       strength: float, view_prompt_sets: list[dict[str, str]]):
        """Perp-Neg's noise terms in one batch through the UNet: eps_uncond, one positive per set of view prompts
        (each set's prompts blended by each camera's azimuth), and the first set's weighted negatives (B, K, ...)
        with their weights (B, K)."""
        if cameras is None:
            raise ValueError("Perp-Neg blends the view prompts by camera: the SDS call must pass the cameras")
        b = x_t.shape[0]
        terms = [view_terms(float(a), float(e), strength) for a, e in zip(cameras.azimuth, cameras.elevation)]
        views = sorted(view_prompt_sets[0])
        sets = [dict(zip(views, self.embed_text([prompts[v] for v in views]))) for prompts in view_prompt_sets]
        positives = [torch.stack([sum(c * embedded[v] for v, c in term.positive.items()) for term in terms])
                     for embedded in sets]
        # Only the negatives with a weight are evaluated: a front view has one, an overhead view none.
        k = max((len(term.negatives) for term in terms), default=0)
        pairs = [(i, j, view) for i, term in enumerate(terms) for j, (view, w) in enumerate(term.negatives) if w]
        n_pos = len(positives)
        rows = torch.tensor(list(range(b)) * (1 + n_pos) + [i for i, _, _ in pairs], dtype=torch.long)
        text = torch.cat([uncond, *positives] + [sets[0][view][None] for _, _, view in pairs])
        out = self.noise(x_t[rows.to(x_t.device)], t[rows.to(t.device)], text, _select(cameras, rows))
        eps_uncond = out[:b]
        eps_positives = [out[(1 + p) * b:(2 + p) * b] for p in range(n_pos)]
        eps_negatives = eps_uncond[:, None].repeat(1, k, *([1] * (x_t.ndim - 1)))  # unweighted: d_i = 0
        weights = torch.zeros(b, k)
        first_negative = (1 + n_pos) * b
        for n, (i, j, _) in enumerate(pairs):
            eps_negatives[i, j] = out[first_negative + n]
            weights[i, j] = terms[i].negatives[j][1]
        return eps_uncond, eps_positives, eps_negatives, weights.to(out.device)


def _select(cameras: Cameras | None, rows: torch.Tensor) -> Cameras | None:
    if cameras is None:
        return None
    return Cameras(*(getattr(cameras, f)[rows.to(getattr(cameras, f).device)] for f in cameras.__dataclass_fields__))
