"""Does a built-in toy prior's colour word steer what it draws? One JSON line per noise level, then a summary.

    .venv/bin/python bench/toy_colour_binding.py [--model toy-objects | FOLDER] [--images 1024]

Held-out training-style renders (a seed the training never used) of plain coloured objects are noised and
denoised, each with the prompt naming every colour in turn and with the empty prompt, at the recommended
guidance scale. Per noise level it prints:

- `colour_move` / `object_move`: how far swapping the colour word (red <-> green, ...) moves the predicted
  noise, next to swapping the object word (mean absolute difference). SDS follows exactly this difference.
- `named_colour_wins`: the share of (image, colour word) pairs whose predicted clean image (x0, with
  guidance) has its object region nearest, of the seven palette colours, to the colour named (chance 1/7).
- `background_tint`: how much the colour words change the background of that prediction, as a share of
  how much they change the object (spread over the seven words of each region's mean colour). A prior that
  paints the named colour over the whole frame asks SDS to grow the object until it fills the view.

At t = 900, toy-objects' first training (3310 steps, predicting the noise) has a colour/object ratio of
0.16 and named_colour_wins of 0.13 (and SDS made a red mug green); after 1600 steps of v-prediction
fine-tuning, 1.81 and 0.69, with a tint of 0.71. A prior has to pass this before an SDS run can be
expected to colour anything. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json

import torch

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.toy.object_data import NAMES, NONE, make_chunk
from blender_dreamfusion.backend.toy.object_vocab import ObjectPrompt
from blender_dreamfusion.backend.toy.objects import OBJECTS
from blender_dreamfusion.backend.toy.vocab import COLOUR_RGB, COLOURS
from blender_dreamfusion.shared.recommended import recommendations

LEVELS = (900, 600, 300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="toy-objects")
    parser.add_argument("--images", type=int, default=1024,
                        help="renders drawn (one of every 16, which share an object and colour, is used if plain)")
    parser.add_argument("--seed", type=int, default=777, help="the renders' seed: not the training's (0)")
    args = parser.parse_args()
    torch.manual_seed(0)
    guidance = load_guidance(args.model, torch.device("cpu"))
    scale = float(recommendations("toy-objects")["guidance_scale"])
    data = make_chunk(0, seed=args.seed, count=args.images, resolution=guidance.input_size)
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])
    chosen = [i for i in range(0, len(data), 16) if data.colours[i] != NONE and data.patterns[i] == NONE]
    swap = {c: COLOURS[(k + 1) % len(COLOURS)] for k, c in enumerate(COLOURS)}
    other_object = {n: NAMES[(k + 1) % len(NAMES)] for k, n in enumerate(NAMES)}
    totals = {t: {"colour_move": 0.0, "object_move": 0.0, "tint": 0.0, "wins": 0, "pairs": 0,
                  "images": 0} for t in LEVELS}
    generator = torch.Generator().manual_seed(0)
    for i in chosen:
        x0 = torch.from_numpy(data.images[i : i + 1]).float() / 127.5 - 1.0
        mask = (x0[0] - x0[0, :, :1, :1]).abs().sum(0) > 0.15  # the corner pixel is the background
        if mask.sum() < 50:
            continue
        name, colour = NAMES[data.objects[i]], COLOURS[data.colours[i]]
        other = other_object[name]
        while not OBJECTS[other].colourable:  # the snowman takes no colour word
            other = other_object[other]
        prompts = [ObjectPrompt(name, c).text() for c in COLOURS]
        prompts += [ObjectPrompt(name, swap[colour]).text(), ObjectPrompt(other, colour).text(), ""]
        cameras = make_cameras(torch.full((len(prompts),), float(data.azimuth[i])),
                               torch.full((len(prompts),), float(data.elevation[i])), 1.8, 47.0)
        text = guidance.embed_text(prompts)
        for t in LEVELS:
            alpha = guidance.scheduler.alphas_cumprod[t]
            noise = torch.randn(x0.shape, generator=generator)
            x_t = (alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise).expand(len(prompts), -1, -1, -1)
            with torch.no_grad():
                eps = guidance.noise(x_t, torch.full((len(prompts),), t), text, cameras)  # v models too
            named = COLOURS.index(colour)
            row = totals[t]
            row["colour_move"] += float((eps[named] - eps[len(COLOURS)]).abs().mean())
            row["object_move"] += float((eps[named] - eps[len(COLOURS) + 1]).abs().mean())
            guided = eps[-1:] + scale * (eps[: len(COLOURS)] - eps[-1:])
            x0_hat = ((x_t[: len(COLOURS)] - (1 - alpha).sqrt() * guided) / alpha.sqrt()).clamp(-1, 1)
            seen = ((x0_hat + 1) / 2)[:, :, mask].mean(-1)  # (colours, 3): the object region's mean colour
            behind = ((x0_hat + 1) / 2)[:, :, ~mask].mean(-1)  # and the background's
            row["tint"] += float(behind.std(0).mean() / seen.std(0).mean().clamp_min(1e-6))
            nearest = torch.cdist(seen, palette).argmin(-1)
            row["wins"] += int((nearest == torch.arange(len(COLOURS))).sum())
            row["pairs"] += len(COLOURS)
            row["images"] += 1
    summary = {"model": args.model, "guidance_scale": scale}
    for t, row in totals.items():
        n = max(row["images"], 1)
        line = {"t": t, "images": row["images"], "colour_move": round(row["colour_move"] / n, 5),
                "object_move": round(row["object_move"] / n, 5),
                "named_colour_wins": round(row["wins"] / max(row["pairs"], 1), 3),
                "background_tint": round(row["tint"] / n, 3)}
        print(json.dumps(line), flush=True)
        summary[f"colour_over_object_t{t}"] = round(line["colour_move"] / max(line["object_move"], 1e-9), 3)
        summary[f"named_colour_wins_t{t}"] = line["named_colour_wins"]
        summary[f"background_tint_t{t}"] = line["background_tint"]
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
