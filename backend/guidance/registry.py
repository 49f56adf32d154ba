"""Which prior class a model gets: a registry keyed by what the model's `model_index.json` says.

A prior class registers itself with `@register_prior` in its own module in this package; every module
here is imported before a model is matched (`discover_priors`), so a new prior is a new file and nothing
else. A model folder names its prior in one of three ways, first match wins:

1. `"_prior": "<name>"` in model_index.json (the built-in `toy-shapes` weights say so);
2. its diffusers `_class_name`, when a prior claims that pipeline class (`pipelines = (...)`);
3. its parts: `_camera_conditioning` -> `camera-pixel`, a `vae` -> `latent`, else `pixel`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from .base import Guidance, ModelLoadError

#: Registered prior name -> class.
PRIORS: dict[str, type[Guidance]] = {}
#: diffusers pipeline `_class_name` -> prior name, from the classes' `pipelines`.
_BY_PIPELINE: dict[str, str] = {}

G = TypeVar("G", bound=type[Guidance])


def register_prior(cls: G) -> G:
    """Class decorator: make `cls` the prior called `cls.prior_name` (and for its `pipelines`)."""
    name = cls.__dict__.get("prior_name")
    if not name:
        raise TypeError(f"{cls.__name__} must set its own prior_name to be registered")
    if PRIORS.get(name, cls) is not cls:
        raise TypeError(f"prior name {name!r} is taken by {PRIORS[name].__qualname__}")
    PRIORS[name] = cls
    for pipeline in cls.pipelines:
        _BY_PIPELINE[pipeline] = name
    return cls


def discover_priors() -> None:
    """Import every module of this package (each registers its priors); the ones already imported cost nothing."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def prior_name_for(index: dict) -> str:
    """The prior a model_index.json asks for (see the module docstring for the order)."""
    named = index.get("_prior")
    if named is not None:
        return str(named)
    by_pipeline = _BY_PIPELINE.get(str(index.get("_class_name", "")))
    if by_pipeline is not None:
        return by_pipeline
    if "_camera_conditioning" in index:
        return "camera-pixel"
    return "latent" if "vae" in index else "pixel"


def prior_class(model: str, index: dict) -> type[Guidance]:
    discover_priors()
    name = prior_name_for(index)
    cls = PRIORS.get(name)
    if cls is None:
        raise ModelLoadError(f"model {model!r} asks for the prior {name!r}; this backend knows "
                             f"{', '.join(map(repr, sorted(PRIORS)))}")
    return cls
