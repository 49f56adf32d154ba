"""Geometries: how a job holds its shape (see base.py). Choose with the JobSpec `geometry` knob."""

from __future__ import annotations

import dataclasses
import json

from .base import Geometry
from .density import DensityField, FieldConfig
from .sdf import SDFConfig, SDFField, SignedDistanceGeometry, resolve_for_render, volsdf_density

#: JobSpec `geometry` value -> (class, its config dataclass).
GEOMETRIES: dict[str, tuple[type[Geometry], type]] = {
    "density": (DensityField, FieldConfig),
    "sdf": (SDFField, SDFConfig),
}


def make_geometry(kind: str, config=None, render_resolution: int | None = None) -> Geometry:
    """A fresh geometry of `kind`; `render_resolution` sizes what a config leaves to the renders (SDF levels)."""
    cls, config_cls = GEOMETRIES[kind]
    config = config if config is not None else config_cls()
    if render_resolution is not None and isinstance(config, SDFConfig):
        config = resolve_for_render(config, render_resolution)
    return cls(config)


def config_to_json(config) -> str:
    return json.dumps(dataclasses.asdict(config))


def config_from_json(kind: str, text: str):
    """A geometry config from a checkpoint's JSON; fields a newer version added take their defaults."""
    config_cls = GEOMETRIES[kind][1]
    known = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items() if k in known}
    return config_cls(**values)


__all__ = ["GEOMETRIES", "DensityField", "FieldConfig", "Geometry", "SDFConfig", "SDFField",
           "SignedDistanceGeometry", "config_from_json", "config_to_json", "make_geometry", "volsdf_density"]
