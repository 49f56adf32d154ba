"""Each geometry's own options: the settings that mean something for one way of holding a shape only.

A JobSpec holds the options of its chosen geometry (`spec.geometry_options`, an `SDFOptions` for `sdf`); the
backend's geometry reads them there (`backend/geometry/sdf.py`'s `loss_weights`). Every option is a knob, and
on the wire, in the panel, the CLI and prompt files it is a setting of its own name like any other
(`jobspec_knobs`, `JobSpec.to_dict`), so the wire did not change when eikonal_weight moved here.

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
            object.__setattr__(self, name, rule.check(name, getattr(self, name)))

    @classmethod
    def from_dict(cls, geometry: str, data: Any) -> "GeometryOptions":
        """The options in `data` (a mapping of them by name), or SpecError naming the option."""
        known = knobs_of(cls)
        allowed = _allowed(geometry, known)
        if not isinstance(data, Mapping):
            raise SpecError("geometry_options", data, allowed, "is not an object")
        for name in data:
            if name not in known:
                raise SpecError(str(name), data[name], allowed, "is not an option of this geometry")
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
        return f"no options (the {geometry} geometry has none)"
    return f"the {geometry} geometry's options: " + ", ".join(known)


def every_option_default() -> dict[str, Any]:
    """Option name -> its default, over every geometry (a panel holds them all)."""
    return {name: value for cls in GEOMETRY_OPTIONS.values() for name, value in cls().to_dict().items()}
