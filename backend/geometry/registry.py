"""The geometry registry: JobSpec `geometry` value (and a checkpoint's type tag) -> class.

Each geometry module registers its class with `@register_geometry`; `backend.geometry` imports every
module of the package, so a new geometry is a new file (plus its name in the JobSpec `geometry` knob's
choices, `shared.jobspec.GEOMETRY_NAMES`, since the wire says what a client may ask for).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from .base import Geometry

#: Registered geometry name -> class.
GEOMETRIES: dict[str, type[Geometry]] = {}

T = TypeVar("T", bound=type[Geometry])


def register_geometry(cls: T) -> T:
    """Class decorator: make `cls` the geometry its config names (`cls.config_class.geometry`)."""
    name = cls.config_class.geometry
    if GEOMETRIES.get(name, cls) is not cls:
        raise TypeError(f"geometry name {name!r} is taken by {GEOMETRIES[name].__qualname__}")
    cls.name = name
    GEOMETRIES[name] = cls
    return cls


def discover_geometries() -> None:
    """Import every module of this package, so each registers its geometry."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def geometry_class(name: str) -> type[Geometry]:
    discover_geometries()
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise KeyError(f"geometry {name!r} is unknown to this backend (it knows "
                       f"{', '.join(map(repr, sorted(GEOMETRIES)))})") from None
