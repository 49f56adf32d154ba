"""Train a built-in toy prior on the CPU, from scratch or from a saved one (`--init`), resumably.

    .venv/bin/python -m blender_dreamfusion.backend.toy.train --prior toy-objects --minutes 240

Renders the training images with the backend's renderer (toy-objects keeps them as files in the work folder),
trains the camera-aware pixel UNet and its tiny text encoder with separate condition dropout for the whole
prompt, the colour, the view words and the camera (classifier-free guidance), and saves everything with
`save_pretrained` into the prior's built-in weights folder together with a sample grid (samples.png).

Resumable: the whole training state (weights, their moving average, the optimiser, the step and every random
generator) is saved in the work folder every `--save-every` minutes and when the run is stopped (Ctrl-C or
SIGTERM); the same command resumes it where it stopped (`--fresh` starts over). A timed run measures its speed
over its first steps and commits to a step count, which it prints and keeps across resumes; the same seed and
`--steps N` on the same machine give the same weights, stopped and resumed or not.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..guidance.camera_pixel import CAMERA_CONDITIONING, camera_features, feature_size
from .data import NO_COLOUR
from .model import TEXT_LENGTH, build_scheduler, build_text_encoder, build_tokenizer, build_unet
from .recipes import RECIPES, Recipe

#: Steps timed to turn --minutes into a step count.
CALIBRATION_STEPS = 20
STATE = "state.pt"


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"wants a {kind.__name__} above 0, got {text!r}")
        return value
    return parse


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"wants a number >= 0 (0: never), got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", choices=tuple(RECIPES), required=True)
    parser.add_argument("--minutes", type=_positive(float), default=50.0, help="training time budget (data excluded)")
    parser.add_argument("--steps", type=_positive(int), default=None,
                        help="train exactly this many steps instead (what a timed run printed, to repeat it)")
    parser.add_argument("--images", type=_positive(int), default=None, help="training images (default: the recipe's)")
    parser.add_argument("--batch", type=_positive(int), default=64)
    parser.add_argument("--lr", type=_positive(float), default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the training state and images (default: ~/.cache/blender-dreamfusion/"
                             "train-PRIOR-seedN); the same folder resumes")
    parser.add_argument("--init", type=Path, default=None,
                        help="begin from the weights of a prior this script saved (e.g. the shipped one) instead of "
                             "random ones: a fine-tune, on the recipe's current data and loss")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: ignore (and replace) a training state saved in the work folder")
    parser.add_argument("--out", type=Path, default=None, help="where the weights go (default: the built-in's)")
    parser.add_argument("--save-every", type=_not_negative, default=5.0, help="minutes between saved training states")
    parser.add_argument("--sample-steps", type=_positive(int), default=100, help="denoising steps for samples.png")
    parser.add_argument("--sample-every", type=_not_negative, default=30.0,
                        help="minutes between progress sample grids (0: only at the end)")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.prior]
    work = args.work or Path.home() / ".cache" / "blender-dreamfusion" / f"train-{recipe.name}-seed{args.seed}"
    out = args.out or recipe.weights
    images = args.images or recipe.images
    started = time.perf_counter()
    data = recipe.make_data(images, args.seed, work, _progress_printer("rendering images"), recipe.resolution)
    print(f"{len(data)} training images ready in {time.perf_counter() - started:.0f} s", flush=True)
    run = Run(recipe, data, args.batch, args.lr, args.seed)
    setup = {"prior": recipe.name, "images": len(data), "batch": args.batch, "lr": args.lr, "seed": args.seed}
    if recipe.prediction != "epsilon":
        setup["prediction"] = recipe.prediction
    if args.init is not None:
        try:
            run.start_from(args.init)
        except (OSError, ValueError) as error:
            raise SystemExit(f"--init {args.init}: {error}") from None
        setup["init"] = str(args.init.resolve())
    state_path = work / STATE
    if state_path.is_file() and not args.fresh:
        saved = torch.load(state_path, weights_only=False)
        if saved["setup"] != setup:
            raise SystemExit(f"{state_path} was saved by a run with {saved['setup']}, not {setup}: give another "
                             "--work folder, or the same settings to resume it")
        run.load_state(saved)
        if args.steps is not None and args.steps != run.total:
            raise SystemExit(f"{state_path} is a run of {run.total} steps, not --steps {args.steps}: give the "
                             "same to resume it, another --work folder, or --fresh to start over")
        print(f"resumed at step {run.step} of {run.total} from {state_path}", flush=True)
    elif args.steps is not None:
        run.total = args.steps

    # Ctrl-C, or the SIGTERM of a session that ends, stops the run between two steps and saves its state (the
    # periodic saves cover a SIGKILL). Only a flag is set where the signal lands: a step cut in two would save
    # weights and generators that no uninterrupted run ever has.
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _train(args, recipe, run, setup, state_path, out, data, started, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args, recipe: Recipe, run: "Run", setup: dict, state_path: Path, out: Path, data, started: float,
           stop: "_StopFlag") -> int:
    train_start, first_step = time.perf_counter(), run.step
    last_save = last_sample = train_start
    bar = _Progress(sys.stdout.isatty())
    while run.total is None or run.step < run.total:
        if stop.signal is not None:
            bar.end()
            if run.total is not None:
                run.save_state(state_path, setup)
                print(f"stopped at step {run.step} of {run.total}; the same command resumes from {state_path}",
                      flush=True)
            return 130
        if run.total is None and run.step == CALIBRATION_STEPS:
            per_step = (time.perf_counter() - train_start) / run.step
            run.total = max(run.step + 1, int(args.minutes * 60.0 / per_step))
            print(f"{per_step:.2f} s per step: training {run.total} steps (repeat with --steps {run.total})",
                  flush=True)
        run.train_step()
        bar.show(run, (run.step - first_step) * args.batch / max(time.perf_counter() - train_start, 1e-9))
        now = time.perf_counter()
        if args.save_every and now - last_save > args.save_every * 60.0 and run.total is not None:
            run.save_state(state_path, setup)
            last_save = now
        if args.sample_every and now - last_sample > args.sample_every * 60.0:
            # Progress pictures only: they draw from their own generator, so the weights do not depend on them.
            out.mkdir(parents=True, exist_ok=True)
            sample_grid(out / "samples.png", recipe, run.tokenizer, run.ema_text, run.ema, run.scheduler,
                        args.seed, steps=50)
            last_sample = time.perf_counter()
    bar.end()
    run.save_state(state_path, setup)
    save(out, recipe, run.tokenizer, run.ema_text, run.ema, run.scheduler,
         {"steps": run.step, "seed": args.seed, "images": len(data), "batch": args.batch, "lr": args.lr,
          "prediction": recipe.prediction, "final_loss": float(np.mean(run.losses[-200:])),
          **_lineage(args.init)})
    sample_grid(out / "samples.png", recipe, run.tokenizer, run.ema_text, run.ema, run.scheduler, args.seed,
                steps=args.sample_steps)
    print(f"saved {out} after {run.step} steps ({(time.perf_counter() - started) / 60:.1f} min this session)",
          flush=True)
    return 0


class Run:
    """The training state: models, their moving averages, the optimiser, the step and the generators."""

    def __init__(self, recipe: Recipe, data, batch: int, lr: float, seed: int):
        self.recipe, self.data, self.batch, self.base_lr = recipe, data, batch, lr
        torch.manual_seed(seed)  # the initial weights
        self.tokenizer = build_tokenizer(recipe.words)
        self.text_encoder = build_text_encoder(len(self.tokenizer))
        self.scheduler = build_scheduler(recipe.prediction)
        self.unet = build_unet(feature_size(CAMERA_CONDITIONING), recipe.resolution, recipe.patch, recipe.channels)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        self.optimiser = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-4)
        if data.images.shape[-1] != recipe.resolution:
            raise ValueError(f"{recipe.name} sees {recipe.resolution} px renders, but its training images are "
                             f"{data.images.shape[-1]} px")
        self.cameras = camera_features(torch.from_numpy(data.azimuth), torch.from_numpy(data.elevation))
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.step, self.total, self.losses = 0, None, []

    def train_step(self) -> None:
        recipe, scheduler, batch = self.recipe, self.scheduler, self.batch
        # The first steps run at progress 0 either way, so `--steps N` repeats a timed run bit for bit.
        progress = self.step / self.total if self.total and self.step >= CALIBRATION_STEPS else 0.0
        lr = self.base_lr * min(1.0, (self.step + 1) / 100) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        index = torch.randint(len(self.data), (batch,), generator=self.gen)
        x0 = torch.from_numpy(self.data.images[index.numpy()]).float() / 127.5 - 1.0
        prompts = [_training_prompt(self.data, int(i), self.rng) for i in index]
        keep = torch.rand(batch, 1, generator=self.gen) > recipe.camera_dropout
        camera = self.cameras[index] * keep
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=self.gen)
        noise = torch.randn(x0.shape, generator=self.gen)
        ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        ids = torch.tensor(self.tokenizer(prompts, padding="max_length", max_length=TEXT_LENGTH,
                                          truncation=True).input_ids)
        pred = _patched(self.unet, recipe.patch, x_t, t, self.text_encoder(ids)[0], camera)
        if recipe.prediction == "v_prediction":
            target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
        else:
            target = noise
        loss = torch.nn.functional.mse_loss(pred, target)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimiser.step()
        decay = min(0.995, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for target, source in ((self.ema, self.unet), (self.ema_text, self.text_encoder)):
                for e, p in zip(target.parameters(), source.parameters()):
                    e.lerp_(p, 1 - decay)
        self.losses.append(loss.item())
        self.step += 1

    def start_from(self, folder: Path) -> None:
        """Weights (and their moving averages) from a prior saved by `save`, whose words and shapes must be
        this recipe's; the optimiser and the schedule start afresh."""
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        words = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer").get_vocab()
        if words != self.tokenizer.get_vocab():
            raise ValueError(f"its tokenizer does not know exactly {self.recipe.name}'s words")
        for name, kind in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):
            try:
                getattr(self, name).load_state_dict(kind.from_pretrained(folder / name).state_dict())
            except RuntimeError as error:  # missing, unexpected or differently shaped weights
                raise ValueError(f"its {name} is not {self.recipe.name}'s: {error}") from None
        self.ema.load_state_dict(self.unet.state_dict())
        self.ema_text.load_state_dict(self.text_encoder.state_dict())

    def save_state(self, path: Path, setup: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"setup": setup, "step": self.step, "total": self.total, "losses": self.losses,
                 "gen": self.gen.get_state(), "rng": self.rng.bit_generator.state,
                 "optimiser": self.optimiser.state_dict(),
                 **{name: getattr(self, name).state_dict() for name in ("unet", "text_encoder", "ema", "ema_text")}}
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save(state, partial)
        partial.replace(path)  # a run killed while saving keeps the previous state whole

    def load_state(self, state: dict) -> None:
        for name in ("unet", "text_encoder", "ema", "ema_text"):
            getattr(self, name).load_state_dict(state[name])
        self.optimiser.load_state_dict(state["optimiser"])
        self.gen.set_state(state["gen"])
        self.rng.bit_generator.state = state["rng"]
        self.step, self.total, self.losses = state["step"], state["total"], list(state["losses"])


def _lineage(init: Path | None) -> dict:
    """What a fine-tune began from: that prior's own training record (which names its own beginning)."""
    if init is None:
        return {}
    index = json.loads((init / "model_index.json").read_text(encoding="utf-8"))
    return {"fine_tuned_from": index.get("_training", {})}


class _StopFlag:
    """Set by a signal handler, read by the training loop between steps."""

    signal: int | None = None

    def set(self, signum, frame) -> None:
        self.signal = signum


def _patched(unet, patch: int, x, t, text, camera):
    """The UNet's noise for full-resolution x, through its patches (as guidance/pixel.py runs it)."""
    from torch.nn import functional as F

    if patch == 1:
        return unet(x, t, encoder_hidden_states=text, class_labels=camera).sample
    out = unet(F.pixel_unshuffle(x, patch), t, encoder_hidden_states=text, class_labels=camera).sample
    return F.pixel_shuffle(out, patch)


def _training_prompt(data, i: int, rng: np.random.Generator) -> str:
    """Separate dropout for the whole prompt, the colour and the view (a pattern is never dropped: a prompt
    without one asks for a plain object); renders that show no colour never name one."""
    if rng.random() < 0.1:
        return ""
    with_colour = data.colours[i] != NO_COLOUR and rng.random() >= 0.25
    return data.prompt(i, with_colour=with_colour, with_view=rng.random() < 0.8)


class _Progress:
    """One rewritten line on a terminal; a line every 50 steps in a log."""

    def __init__(self, tty: bool):
        self.tty, self.shown = tty, False

    def show(self, run: Run, rate: float) -> None:
        """`rate`: training images a second in this session."""
        if not self.tty and run.step % 50:
            return
        loss = np.mean(run.losses[-50:])
        left = ""
        if run.total:
            done = run.step / run.total
            eta = (run.total - run.step) * run.batch / max(rate, 1e-9)
            left = f" {100 * done:5.1f} %  {eta / 60:.0f} min left"
        text = f"step {run.step}/{run.total or '?'}{left}  loss {loss:.4f}  {rate:.0f} img/s"
        if self.tty:
            print("\r" + text.ljust(78), end="", flush=True)
            self.shown = True
        else:
            print(text, flush=True)

    def end(self) -> None:
        if self.shown:
            print(flush=True)
            self.shown = False


def _progress_printer(what: str):
    last = [0.0]

    def show(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 10.0 or done == total:
            print(f"{what}: {done}/{total}", flush=True)
            last[0] = time.perf_counter()
    return show


def save(folder: Path, recipe: Recipe, tokenizer, text_encoder, unet, scheduler, info: dict) -> None:
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "_camera_conditioning": CAMERA_CONDITIONING, "_training": info,
             "_recommended_spec": recipe.recommended_spec,
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}
    if recipe.patch != 1:
        index["_patch_size"] = recipe.patch
    if folder.resolve() == recipe.weights.resolve():
        # The shipped weights are the built-in prior, vocabulary rules and all; a copy trained elsewhere
        # loads as a plain camera-aware prior (the server checks the vocabulary of the built-in model only).
        index["_prior"] = recipe.name
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


@torch.no_grad()
def sample_grid(path: Path, recipe: Recipe, tokenizer, text_encoder, unet, scheduler, seed: int,
                scale: float = 3.0, steps: int = 100) -> None:
    """The recipe's grid: a row per shape or object, a column per view (recipes.VIEWS)."""
    from PIL import Image

    from diffusers import DDPMScheduler

    sampler = DDPMScheduler.from_config(scheduler.config)
    sampler.set_timesteps(steps)
    tiles = recipe.grid()
    prompts = [prompt for prompt, _, _ in tiles]
    n, size = len(tiles), recipe.resolution
    camera = camera_features(torch.tensor([az for _, az, _ in tiles]), torch.tensor([el for _, _, el in tiles]))
    ids = torch.tensor(tokenizer(prompts + [""] * n, padding="max_length", max_length=TEXT_LENGTH).input_ids)
    text = text_encoder(ids)[0]
    noise = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 3, size, size), generator=noise)
    for t in sampler.timesteps:
        eps = _patched(unet, recipe.patch, torch.cat([x, x]), t, text, torch.cat([camera, camera]))
        cond, uncond = eps.chunk(2)
        x = sampler.step(uncond + scale * (cond - uncond), t, x, generator=noise).prev_sample
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rows, columns = n // recipe.columns, recipe.columns
    grid = pixels.reshape(rows, columns, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(rows * size,
                                                                                        columns * size, 3)
    zoom = max(1, 96 // size)
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
