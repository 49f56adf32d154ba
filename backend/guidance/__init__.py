"""Guidance: frozen diffusion priors behind one interface (base.py). A new prior is a new file here.

Its class registers itself with `@register_prior` (registry.py says how a model's model_index.json picks
it); `load_guidance` imports every module of this package before it matches a model.
"""

from .base import Guidance, ModelLoadError, SDSResult
from .loading import load_guidance
from .registry import PRIORS, register_prior

__all__ = ["Guidance", "ModelLoadError", "PRIORS", "SDSResult", "load_guidance", "register_prior"]
