"""Which prior class a model gets: a registry keyed by what the model's `model_index.json` says.

A prior class registers itself with `@register_prior` in its own module in this package; every module
here is imported before a model is matched (`discover_priors`), so a new prior is a new file and nothing
else. A model folder names its prior in one of three ways, first match wins:

1. `"_prior": "<name>"` in model_index.json (the built-in `toy-shapes` weights say so);
2. its diffusers `_class_name`, when a prior claims that pipeline class (`pipelines = (...)`);
3. its parts: a `vae` -> `latent`; else `_camera_conditioning` -> `camera-pixel`; else `pixel`.
"""

from __future__ import annotations

from typing import TypeVar

from ..registry import Registry
from .base import Guidance, ModelLoadError

#: Registered prior name -> class.
PRIORS: Registry[type[Guidance]] = Registry("prior", __package__)
#: diffusers pipeline `_class_name` -> prior name, from the classes' `pipelines`.
_BY_PIPELINE: dict[str, str] = {}

G = TypeVar("G", bound=type[Guidance])


def register_prior(cls: G) -> G:
    """Class decorator: make `cls` the prior called `cls.prior_name` (and for its `pipelines`)."""
    if getattr(cls, "space", None) not in ("latent", "pixel"):
        raise TypeError(f"{cls.__name__} must say its space: 'latent' or 'pixel'")
    PRIORS.add(cls.__dict__.get("prior_name", ""), cls)
    # Only what the class itself declares: a subclass of LatentGuidance must not take over Stable Diffusion.
    for pipeline in cls.__dict__.get("pipelines", ()):
        _BY_PIPELINE[pipeline] = cls.prior_name
    return cls


def discover_priors() -> None:
    PRIORS.discover()


def prior_name_for(index: dict) -> str:
    """The prior a model_index.json asks for (see the module docstring for the order)."""
    named = index.get("_prior")
    if named is not None:
        return str(named)
    by_pipeline = _BY_PIPELINE.get(str(index.get("_class_name", "")))
    if by_pipeline is not None:
        return by_pipeline
    if "vae" in index:
        return "latent"
    return "camera-pixel" if "_camera_conditioning" in index else "pixel"


def prior_class(model: str, index: dict) -> type[Guidance]:
    discover_priors()
    name = prior_name_for(index)
    if name not in PRIORS:
        raise ModelLoadError(f"model {model!r} asks for the prior {name!r}; this backend knows "
                             f"{', '.join(map(repr, sorted(PRIORS)))}")
    return PRIORS[name]
