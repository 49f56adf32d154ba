"""The geometry registry: JobSpec `geometry` value (and a checkpoint's type tag) -> class.

Each geometry module registers its class with `@register_geometry`; every module of this package is
imported before a lookup, so a new geometry is a new file (plus its name in the JobSpec `geometry` knob's
choices, `GeometryName` in shared/jobspec.py, since the wire says what a client may ask for).
"""

from __future__ import annotations

from typing import TypeVar

from ..registry import Registry
from .base import Geometry

#: Registered geometry name -> class.
GEOMETRIES: Registry[type[Geometry]] = Registry("geometry", __package__)

T = TypeVar("T", bound=type[Geometry])


def register_geometry(cls: T) -> T:
    """Class decorator: make `cls` the geometry its config names (`cls.config_class.geometry`)."""
    GEOMETRIES.add(cls.config_class.geometry, cls)
    cls.name = cls.config_class.geometry
    return cls


def discover_geometries() -> None:
    GEOMETRIES.discover()


def geometry_class(name: str) -> type[Geometry]:
    return GEOMETRIES.lookup(name)
