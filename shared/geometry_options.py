"""Each geometry's own options: the settings that mean something for one way of holding a shape only.

A JobSpec carries the options of its chosen geometry nested (`geometry_options`, e.g. `{"eikonal_weight": 0.1}`
for `sdf`); the backend's geometry reads them (`backend/geometry/sdf.py`'s `loss_weights`). Every option is a
knob, so the panel, the CLI and prompt files offer it by its name like any other setting (`jobspec_knobs`), and
a flat `eikonal_weight` in a spec from before options were nested still loads.

A new geometry with options is one dataclass here, named in `GEOMETRY_OPTIONS`. Option names are unique across
geometries and distinct from JobSpec's fields (a test checks), so the flat name alone says which geometry it is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import SpecError
from .knobs import Knob, knob, knobs_of


@dataclass(frozen=True)
class GeometryOptions:
    """Base of every geometry's options; checks each field with its knob."""

    def __post_init__(self) -> None:
        for name, rule in knobs_of(type(self)).items():
            object.__setattr__(self, name, rule.check(f"geometry_options.{name}", getattr(self, name)))

    @classmethod
    def from_dict(cls, geometry: str, data: Any) -> "GeometryOptions":
        """The options in `data` (a JSON object), or SpecError naming `geometry_options.<name>`."""
        known = knobs_of(cls)
        allowed = _allowed(geometry, known)
        if not isinstance(data, Mapping):
            raise SpecError("geometry_options", data, allowed, "is not an object")
        for name in data:
            if name not in known:
                raise SpecError(f"geometry_options.{name}", data[name], allowed, "is not an option of this geometry")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in knobs_of(type(self))}


@dataclass(frozen=True)
class DensityOptions(GeometryOptions):
    """The density field (DreamFusion's) has no options of its own."""


@dataclass(frozen=True)
class SDFOptions(GeometryOptions):
    eikonal_weight: float = knob(0.1, value_type="float", minimum=0.0, maximum=10_000.0, group="optimiser",
                                 help="sdf: keeps the signed distance a distance (its gradient of length 1)")


#: Geometry name (JobSpec's `GeometryName`) -> its options.
GEOMETRY_OPTIONS: dict[str, type[GeometryOptions]] = {"density": DensityOptions, "sdf": SDFOptions}


def option_knobs() -> dict[str, tuple[str, Knob]]:
    """Option name -> (the geometry it belongs to, its knob), over every geometry."""
    return {name: (geometry, rule) for geometry, cls in GEOMETRY_OPTIONS.items()
            for name, rule in knobs_of(cls).items()}


def _allowed(geometry: str, known: Mapping[str, Knob]) -> str:
    if not known:
        return f"an empty object (the {geometry} geometry has no options)"
    return f"an object of the {geometry} geometry's options: " + ", ".join(known)


def every_option_default() -> dict[str, Any]:
    """Option name -> its default, over every geometry (a panel holds them all)."""
    return {name: value for cls in GEOMETRY_OPTIONS.values() for name, value in cls().to_dict().items()}


def setting_name(field: str) -> str:
    """The flat name a panel, a CLI flag or a prompt file's column gives the field a SpecError names
    (`geometry_options.eikonal_weight` -> `eikonal_weight`)."""
    return field.removeprefix("geometry_options.")
