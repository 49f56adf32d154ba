"""Train the toy-shapes prior from scratch on the CPU.

    .venv/bin/python -m blender_dreamfusion.backend.toy.train --minutes 50 --seed 0

Renders the training images with the backend's renderer, trains the
camera-aware pixel UNet and its tiny text encoder with separate condition
dropout for shape and colour (classifier-free guidance), and saves
everything with `save_pretrained` into backend/toy/weights together with a
sample grid (samples.png). A timed run prints the step count it commits to;
the same seed and `--steps N` on the same machine give the same weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import WEIGHTS
from ..guidance.camera_pixel import CAMERA_CONDITIONING, camera_features, feature_size
from .data import NO_COLOUR, make_images
from .model import TEXT_LENGTH, build_scheduler, build_text_encoder, build_tokenizer, build_unet
from .settings import RECOMMENDED_SPEC
from .vocab import COLOURS, SHAPES

#: Steps timed to turn --minutes into a step count.
CALIBRATION_STEPS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=50.0, help="training time budget (data excluded)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train exactly this many steps instead (what a timed run printed, to repeat it)")
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape-weight", action="append", type=_shape_weight, default=None, metavar="SHAPE=W",
                        help="draw SHAPE W times as often as the others (repeatable; default: cube=2)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--sample-steps", type=int, default=100, help="denoising steps for samples.png")
    parser.add_argument("--sample-every", type=float, default=15.0,
                        help="minutes between progress sample grids (0: only at the end)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    # The cube is the one shape whose look depends on the azimuth, so it needs more examples than the others.
    shape_weights = dict(args.shape_weight or [("cube", 2.0)])
    data = make_images(args.images, seed=args.seed, batch=32, shape_weights=shape_weights)
    print(f"rendered {len(data)} training images in {time.perf_counter() - started:.0f} s", flush=True)

    tokenizer = build_tokenizer()
    text_encoder, scheduler = build_text_encoder(len(tokenizer)), build_scheduler()
    unet = build_unet(feature_size(CAMERA_CONDITIONING))
    ema = copy.deepcopy(unet).requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    alphas = scheduler.alphas_cumprod
    images = torch.from_numpy(data.images).float() / 127.5 - 1.0
    cameras = camera_features(torch.from_numpy(data.azimuth), torch.from_numpy(data.elevation))
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # The run is fixed in steps, not seconds, so it can be repeated exactly with --steps: a timed run measures
    # its speed over the first steps and then commits to the step count that fits the budget.
    total = args.steps
    train_start = time.perf_counter()
    last_sample = train_start
    step, losses = 0, []
    while total is None or step < total:
        if total is None and step == CALIBRATION_STEPS:
            per_step = (time.perf_counter() - train_start) / step
            total = max(step + 1, int(args.minutes * 60.0 / per_step))
            print(f"{per_step:.2f} s per step: training {total} steps (repeat with --steps {total})", flush=True)
        # The first steps run at progress 0 either way, so `--steps N` repeats a timed run bit for bit.
        progress = step / total if total and step >= CALIBRATION_STEPS else 0.0
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimiser.param_groups:
            group["lr"] = lr
        index = torch.randint(len(data), (args.batch,), generator=gen)
        x0 = images[index]
        prompts = [_training_prompt(data, int(i), rng) for i in index]
        camera = cameras[index] * (torch.rand(args.batch, 1, generator=gen) > 0.05)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        ab = alphas[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        ids = torch.tensor(tokenizer(prompts, padding="max_length", max_length=TEXT_LENGTH,
                                     truncation=True).input_ids)
        pred = unet(x_t, t, encoder_hidden_states=text_encoder(ids)[0], class_labels=camera).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for target, source in ((ema, unet), (ema_text, text_encoder)):
                for e, p in zip(target.parameters(), source.parameters()):
                    e.lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step}/{total or '?'}  loss {np.mean(losses[-50:]):.4f}  lr {lr:.2e}  "
                  f"{step * args.batch / (time.perf_counter() - train_start):.0f} img/s", flush=True)
        if args.sample_every and time.perf_counter() - last_sample > args.sample_every * 60.0:
            # Progress pictures only: they draw from their own generator, so the weights do not depend on them.
            args.out.mkdir(parents=True, exist_ok=True)
            sample_grid(args.out / "samples.png", tokenizer, ema_text, ema, scheduler, args.seed, steps=50)
            last_sample = time.perf_counter()

    save(args.out, tokenizer, ema_text, ema, scheduler, {"steps": step, "seed": args.seed, "images": len(data),
                                                          "shape_weights": shape_weights,
                                                          "final_loss": float(np.mean(losses[-200:]))})
    sample_grid(args.out / "samples.png", tokenizer, ema_text, ema, scheduler, args.seed, steps=args.sample_steps)
    print(f"saved {args.out} after {step} steps in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


def _shape_weight(text: str) -> tuple[str, float]:
    shape, _, weight = text.partition("=")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if shape not in SHAPES or not value >= 0:
        raise argparse.ArgumentTypeError(f"--shape-weight wants SHAPE=W with SHAPE among {', '.join(SHAPES)} "
                                         f"and W >= 0; got {text!r}")
    return shape, value


def _training_prompt(data, i: int, rng: np.random.Generator) -> str:
    """Separate dropout for shape and colour; textureless renders never name a colour."""
    if rng.random() < 0.1:
        return ""
    with_colour = data.colours[i] != NO_COLOUR and rng.random() >= 0.25
    return data.prompt(i, with_colour=with_colour, with_view=rng.random() < 0.8)


def save(folder: Path, tokenizer, text_encoder, unet, scheduler, info: dict) -> None:
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "_camera_conditioning": CAMERA_CONDITIONING, "_training": info, "_recommended_spec": RECOMMENDED_SPEC,
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}
    if folder.resolve() == WEIGHTS.resolve():
        # The shipped weights are the built-in prior, vocabulary rules and all; a copy trained elsewhere
        # loads as a plain camera-aware prior (the server checks the vocabulary of the built-in model only).
        index["_prior"] = "toy-shapes"
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


@torch.no_grad()
def sample_grid(path: Path, tokenizer, text_encoder, unet, scheduler, seed: int, scale: float = 3.0,
                steps: int = 100) -> None:
    """One row per shape (colours cycling), columns front / front at 45 degrees / side / back / overhead."""
    from PIL import Image

    from diffusers import DDPMScheduler

    sampler = DDPMScheduler.from_config(scheduler.config)
    sampler.set_timesteps(steps)
    # 45 degrees shows whether the cube got its corner view (two faces), not the front square again.
    views = [(0.0, 10.0, "front"), (45.0, 20.0, "front"), (90.0, 10.0, "side"), (180.0, 10.0, "back"),
             (30.0, 70.0, "overhead")]
    prompts, cams = [], []
    for row, shape in enumerate(SHAPES):
        for az, el, view in views:
            prompts.append(f"a {COLOURS[row % len(COLOURS)]} {shape}, {view} view")
            cams.append((az, el))
    n = len(prompts)
    camera = camera_features(torch.tensor([c[0] for c in cams]), torch.tensor([c[1] for c in cams]))
    ids = torch.tensor(tokenizer(prompts + [""] * n, padding="max_length", max_length=TEXT_LENGTH).input_ids)
    text = text_encoder(ids)[0]
    noise = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 3, 32, 32), generator=noise)
    for t in sampler.timesteps:
        eps = unet(torch.cat([x, x]), t, encoder_hidden_states=text, class_labels=torch.cat([camera, camera])).sample
        cond, uncond = eps.chunk(2)
        x = sampler.step(uncond + scale * (cond - uncond), t, x, generator=noise).prev_sample
    tiles = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grid = tiles.reshape(len(SHAPES), len(views), 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(len(SHAPES) * 32,
                                                                                              len(views) * 32, 3)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
