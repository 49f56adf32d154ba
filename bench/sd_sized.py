"""One SDS step against a Stable-Diffusion-1.5-sized prior, timed phase by phase (`step_time.py --model sd-sized`).

The UNet, VAE and CLIP text encoder are built from SD 1.5's configs with random
weights: speed does not depend on what the weights know, and nothing is
downloaded. On CUDA they run as a real job would (fp16, the UNet channels_last,
64 x 64 renders scored at 512 x 512); on a CPU at a reduced size (the same
layout with narrow channels, scored at 128 x 128), so CI runs the same code.
Two trainers interleave their steps, plain SDS and SDS with Perp-Neg, so drift
hits both alike and their ratio is what Perp-Neg costs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from blender_dreamfusion.backend.guidance.latent import LatentGuidance
from blender_dreamfusion.backend.tiny_model import tiny_clip_tokenizer
from blender_dreamfusion.backend.trainer import Trainer
from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.recommended import recommendations

#: The spec's model only names the recipe; the prior itself is built here.
RECIPE_MODEL = "runwayml/stable-diffusion-v1-5"
#: (UNet channels, cross-attention width, VAE channels, text width, text layers, latent side): SD 1.5, reduced.
SIZES = {
    "full": ((320, 640, 1280, 1280), 768, (128, 256, 512, 512), 768, 12, 64),
    "reduced": ((32, 64, 64, 64), 64, (32, 64, 64, 64), 64, 2, 16),
}
VARIANTS = {"sds": 0.0, "sds_perp_neg": 2.0}
PHASES = ("render", "guidance", "backward", "optimiser", "occupancy")
PROJECTED_STEPS = 10_000


def build_parts(device: torch.device, size: str) -> dict:
    """The prior's parts with random weights, built on `device` in the dtype a job would use there."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    diffusers_logging.set_verbosity_error()  # "cast with to()" advice for from_pretrained, which is not used here

    unet_channels, cross, vae_channels, text_width, text_layers, latent = SIZES[size]
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(Path(tmp), CLIPTokenizer)
    with torch.device(device):  # built where it runs: initialising 1 B parameters on a CPU takes a while
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=text_width, intermediate_size=4 * text_width,
            num_attention_heads=max(1, text_width // 64), num_hidden_layers=text_layers, max_position_embeddings=77,
            hidden_act="quick_gelu"))
        unet = UNet2DConditionModel(
            sample_size=latent, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=unet_channels,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=cross, attention_head_dim=8, norm_num_groups=32)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=vae_channels, layers_per_block=2,
            latent_channels=4, norm_num_groups=32, sample_size=latent * 8)
    for part in (text_encoder, unet, vae):
        part.requires_grad_(False).eval().to(dtype=dtype)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, clip_sample=False)
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae, "tokenizer": tokenizer, "scheduler": scheduler,
            "dtype": dtype}


def build_prior(device: torch.device, size: str) -> LatentGuidance:
    parts = build_parts(device, size)
    if device.type == "cuda":
        parts["unet"].to(memory_format=torch.channels_last)
    return LatentGuidance(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], parts["scheduler"],
                          device, parts["dtype"])


def write_model(folder: Path, device: torch.device, size: str) -> Path:
    """The same prior as a Stable Diffusion pipeline folder (`save_pretrained`), for a job to load by path as it
    would load real weights (`from_pretrained`)."""
    from diffusers import StableDiffusionPipeline

    parts = build_parts(device, size)
    parts.pop("dtype")
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


class _PartClock:
    """Wraps the prior's VAE encode and UNet call to charge their time (CUDA-synchronised) apart."""

    def __init__(self, guidance: LatentGuidance, device: torch.device):
        self.ms: dict[str, float] = {"vae_encode": 0.0, "unet": 0.0}
        self.device = device
        for name, method in (("vae_encode", "prepare"), ("unet", "predict_noise")):
            setattr(guidance, method, self._timed(name, getattr(guidance, method)))

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.ms[name] += (time.perf_counter() - start) * 1000.0
            return out
        return wrapper

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def take(self) -> dict[str, float]:
        out, self.ms = self.ms, {k: 0.0 for k in self.ms}
        return out


def run(device: torch.device, steps: int, warmup: int) -> dict:
    size = "full" if device.type == "cuda" else "reduced"
    guidance = build_prior(device, size)
    weights_bytes = (torch.cuda.memory_allocated(device) if device.type == "cuda" else 0)
    parts = _PartClock(guidance, device)
    base = {**recommendations(RECIPE_MODEL), "prompt": "a red cube", "model": RECIPE_MODEL, "seed": 0,
            "steps": warmup + steps}
    trainers = {name: Trainer(JobSpec.from_dict({**base, "perp_neg": strength}), guidance, device=device)
                for name, strength in VARIANTS.items()}
    totals = {name: [] for name in VARIANTS}
    phases = {name: {p: [] for p in (*PHASES, "vae_encode", "unet")} for name in VARIANTS}
    peak = {}
    for i in range(warmup + steps):
        if device.type == "cuda" and i == warmup:  # the peak of training, not of building the prior
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        for name, trainer in trainers.items():  # interleaved: drift hits both alike
            parts.take()
            start = time.perf_counter()
            stats = trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = (time.perf_counter() - start) * 1000.0
            inside = parts.take()
            if i >= warmup:
                totals[name].append(elapsed)
                for phase in PHASES:
                    phases[name][phase].append(stats.timings_ms.get(phase, 0.0))
                for phase, ms in inside.items():
                    phases[name][phase].append(ms)
        if device.type == "cuda" and i == warmup + steps - 1:
            peak["max_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    spec = trainers["sds"].spec
    variants = {}
    for name in VARIANTS:
        median = statistics.median(totals[name])
        variants[name] = {
            "step_ms_median": round(median, 1),
            "steps_per_s": round(1000.0 / median, 2),
            "phase_ms_median": {k: round(statistics.median(v), 1) for k, v in phases[name].items()},
            "projected_minutes_for_10k_steps": round(median * PROJECTED_STEPS / 60_000.0, 1),
        }
    unet, vae, text = guidance.unet, guidance.vae, guidance.text_encoder
    result = {
        "bench": "step_time_sd_sized",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": "Stable Diffusion 1.5 (random weights)" if size == "full" else "SD 1.5 layout, reduced widths (CPU)",
        "torch": torch.__version__,
        "dtype": str(guidance.dtype).replace("torch.", ""),
        "unet_channels_last": device.type == "cuda",
        "parameters_millions": {"unet": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
                                "vae": round(sum(p.numel() for p in vae.parameters()) / 1e6, 1),
                                "text_encoder": round(sum(p.numel() for p in text.parameters()) / 1e6, 1)},
        "render_resolution": spec.render_resolution,
        "guidance_resolution": guidance.input_size,
        "views_per_step": spec.views_per_step,
        "geometry": spec.geometry,
        "steps_measured": steps,
        "variants": variants,
        "perp_neg_over_plain_step_time": round(variants["sds_perp_neg"]["step_ms_median"]
                                               / variants["sds"]["step_ms_median"], 3),
    }
    if device.type == "cuda":
        result["gpu_memory"] = {"weights_gib": round(weights_bytes / 2**30, 2), **peak}
    return result
