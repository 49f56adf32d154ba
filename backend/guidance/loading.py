"""Load a prior from a diffusers model folder or Hugging Face repo id, with one clear error when it can't."""

from __future__ import annotations

import contextlib
import importlib
import warnings
from pathlib import Path

import torch

from blender_dreamfusion.shared import model_source

from .base import Guidance, ModelLoadError
from .registry import prior_class

#: Libraries a model_index.json may name; nothing else is imported from a model's config.
_LIBRARIES = ("diffusers", "transformers")


def load_guidance(model: str, device: torch.device) -> Guidance:
    """The guidance for a JobSpec `model`: the registered prior its model_index.json names (registry.py)."""
    # Library deprecation chatter is not the user's business; our own errors say what matters.
    with warnings.catch_warnings(), _quiet_library_logs():
        warnings.simplefilter("ignore")
        return _load(model, device)


@contextlib.contextmanager
def _quiet_library_logs():
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars:
            transformers_logging.enable_progress_bar()


def builtin_folder(model: str) -> Path:
    """Where a built-in prior's weights live inside the package."""
    from ..toy import BUILTIN_WEIGHTS

    folder = BUILTIN_WEIGHTS[model]
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"the built-in prior {model!r} has no weights in this installation ({folder}); "
                             f"train them with `python -m blender_dreamfusion.backend.toy.train --prior "
                             f"{folder_prior(model)}`")
    return folder


def folder_prior(model: str) -> str:
    """The built-in prior whose training makes `model`'s weights."""
    from ..toy import BUILTIN_WEIGHTS

    return next(name for name, folder in BUILTIN_WEIGHTS.items() if folder == BUILTIN_WEIGHTS[model])


def _load(model: str, device: torch.device) -> Guidance:
    where = model_source(model)
    if where == "builtin":
        source = str(builtin_folder(model))
    elif where == "local":
        source = str(Path(model).expanduser())
    else:
        source = model
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    index = _model_index(model, source)
    if where == "builtin":
        # A built-in name is its prior: toy-objects-view-text reads toy-objects' weights its own way.
        index = {**index, "_prior": model}
    cls = prior_class(model, index)
    if cls.space == "pixel" and "vae" in index:
        raise ModelLoadError(f"model {model!r} has a VAE, so its UNet denoises latents, but it names the "
                             f"pixel-space prior {cls.prior_name!r}")
    missing = [name for name in (*cls.components, "scheduler") if name not in index]
    if missing:
        raise ModelLoadError(f"model {model!r} has no {', '.join(missing)}: it is not a text-to-image "
                             "diffusion model")
    parts = {name: _load_part(model, source, name, index, dtype) for name in cls.components}
    scheduler = _ddpm_scheduler(model, source)
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False).eval().to(device)
    if device.type == "cuda":
        parts["unet"].to(memory_format=torch.channels_last)
    return cls.from_parts(model, index, parts, scheduler, device, dtype)


def _model_index(model: str, source: str) -> dict:
    from diffusers import DiffusionPipeline

    if model_source(model) != "hub" and not Path(source).is_dir():
        raise ModelLoadError(f"model folder {model!r} does not exist")
    try:
        return DiffusionPipeline.load_config(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found(model, exc)) from None


def _load_part(model: str, source: str, name: str, index: dict, dtype: torch.dtype):
    library, class_name = index[name][:2]
    if library not in _LIBRARIES:
        raise ModelLoadError(f"model {model!r}: component {name!r} comes from {library!r}; only "
                             f"{', '.join(_LIBRARIES)} components are loaded")
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise ModelLoadError(f"model {model!r}: {library} has no class {class_name!r} (component {name!r}); "
                             "a newer version may be needed")
    kwargs: dict = {"subfolder": name}
    if name != "tokenizer":
        kwargs["dtype" if library == "transformers" else "torch_dtype"] = dtype
        if dtype == torch.float16:
            # Half the download and memory when the model ships fp16 weights (IF's T5-XXL: 19 GB in fp32).
            with contextlib.suppress(OSError, ValueError):
                return cls.from_pretrained(source, variant="fp16", **kwargs)
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found(model, exc)) from None


def _ddpm_scheduler(model: str, source: str):
    # SDS only needs the noise schedule; DDPM reads it from any diffusers scheduler config.
    from diffusers import DDPMScheduler

    try:
        return DDPMScheduler.from_config(DDPMScheduler.load_config(source, subfolder="scheduler"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found(model, exc)) from None


def _not_found(model: str, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if model_source(model) == "local":
        return f"could not load model folder {model!r}: {reason[:200]}"
    gated = (" DeepFloyd IF is gated: accept its licence on its Hugging Face page and log in "
             "(`hf auth login`) first." if model.lower().startswith("deepfloyd/") else "")
    return (f"could not load model {model!r} ({reason[:200]}). If the machine is offline, download it where "
            f"there is network (`hf download {model}` fills the Hugging Face cache) or pass a local "
            f"diffusers folder with --model /path/to/folder.{gated}")
