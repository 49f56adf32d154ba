"""Geometries: how a job holds its shape (base.py). A new geometry is a new file here (registry.py).

Choose one with the JobSpec `geometry` knob; every module of this package is imported below, so each
registers itself.
"""

from __future__ import annotations

from .base import Geometry, GeometryConfig
from .density import DensityConfig, DensityField
from .registry import GEOMETRIES, discover_geometries, geometry_class, register_geometry
from .sdf import SDFConfig, SDFField, SignedDistanceGeometry, resolve_for_render, volsdf_density

discover_geometries()


def make_geometry(name: str, config: GeometryConfig | None = None,
                  render_resolution: int | None = None) -> Geometry:
    """A fresh geometry called `name`; `render_resolution` sizes what a config leaves to the renders."""
    config = config if config is not None else geometry_class(name).config_class()
    if config.geometry != name:
        raise ValueError(f"a {type(config).__name__} builds the {config.geometry!r} geometry, not {name!r}")
    if render_resolution is not None:
        config = config.for_render(render_resolution)
    return config.build()


__all__ = ["GEOMETRIES", "DensityConfig", "DensityField", "Geometry", "GeometryConfig", "SDFConfig", "SDFField",
           "SignedDistanceGeometry", "discover_geometries", "geometry_class", "make_geometry",
           "register_geometry", "resolve_for_render", "volsdf_density"]
