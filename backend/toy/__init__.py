"""The built-in `toy-shapes` prior: a tiny camera-aware pixel diffusion model of coloured primitives."""

from pathlib import Path

#: The trained weights, saved with `save_pretrained` by `python -m blender_dreamfusion.backend.toy.train`.
WEIGHTS = Path(__file__).resolve().parent / "weights"
