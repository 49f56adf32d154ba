"""Guidance: frozen diffusion priors behind one interface (a new prior is a new file here)."""

from .base import Guidance, SDSResult
from .loading import ModelLoadError, load_guidance

__all__ = ["Guidance", "SDSResult", "ModelLoadError", "load_guidance"]
