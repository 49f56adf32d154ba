"""Describe a user-facing setting once: its type, range, help text and group.

The JobSpec validates against these, the Blender panel builds its
properties (min/max/tooltip) from them and the CLI builds its flags from
them, so the three edges can never disagree about what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import SpecError

#: What a knob holds: it decides the check, the CLI flag's form and the Blender property's type.
ValueType = Literal["text", "int", "float", "range", "bool", "choice"]
VALUE_TYPES: tuple[str, ...] = get_args(ValueType)


@dataclass(frozen=True)
class Knob:
    """One user-facing setting: its value type, help text, panel group and what it allows."""

    value_type: ValueType
    help: str
    group: str = "general"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    max_len: int = 0
    #: For `range`: the largest allowed max - min (e.g. 360 degrees of azimuth).
    max_span: float | None = None
    #: For `text`: must contain a non-space character.
    required: bool = False
    #: For `int`: the only values allowed (e.g. texture sizes), shown as a list in panels and errors.
    values: tuple[int, ...] = ()
    #: For `int`: 0 turns the setting off, and any other value must be at least this (a decimation to 1 triangle
    #: leaves no mesh). `minimum` stays 0, so a panel's slider can still be set back to off.
    least_on: int | None = None

    def __post_init__(self) -> None:
        # A typo here would otherwise surface as "unknown knob value type" on the first value checked.
        if self.value_type not in VALUE_TYPES:
            raise ValueError(f"Knob value_type {self.value_type!r} is not one of {', '.join(VALUE_TYPES)}")
        if self.values and self.value_type != "int":
            raise ValueError("Knob values are for int knobs only")
        if self.least_on is not None and (self.value_type != "int" or self.minimum != 0):
            raise ValueError("Knob least_on is for int knobs whose minimum is 0 (off)")

    def allowed(self) -> str:
        """Human text of what this knob accepts, used in every error message."""
        unit = f" {self.unit}" if self.unit else ""
        if self.value_type == "text":
            lead = "non-empty text" if self.required else "text"
            return f"{lead} of at most {self.max_len} characters"
        if self.value_type == "bool":
            return "true or false"
        if self.value_type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.value_type == "int" and self.values:
            return "one of " + ", ".join(str(v) for v in self.values) + unit
        if self.value_type == "int" and self.least_on is not None:
            return f"an integer from 0 to {format_number(self.maximum)}{unit}: 0 (off) or at least {self.least_on}"
        if self.value_type == "int":
            return f"an integer from {format_number(self.minimum)} to {format_number(self.maximum)}{unit}"
        if self.value_type == "float":
            return f"a number from {format_number(self.minimum)} to {format_number(self.maximum)}{unit}"
        span = f", max - min <= {format_number(self.max_span)}" if self.max_span is not None else ""
        return f"[min, max] with {format_number(self.minimum)} <= min <= max <= {format_number(self.maximum)}{unit}{span}"

    def check(self, name: str, value: Any) -> Any:
        """Return `value` in its canonical Python form, or raise SpecError naming `name`."""
        fail = lambda problem="is out of range": SpecError(name, value, self.allowed(), problem)  # noqa: E731
        if self.value_type == "text":
            if not isinstance(value, str):
                raise fail("is not text")
            if len(value) > self.max_len:
                raise fail(f"is too long ({len(value)} characters)")
            if self.required and not value.strip():
                raise fail("is empty")
            if any(ord(c) < 32 and c not in "\t\n" for c in value):
                raise fail("contains control characters")
            if not is_valid_unicode(value):
                raise fail("contains unpaired surrogates (not valid Unicode)")
            return value
        if self.value_type == "bool":
            if not isinstance(value, bool):
                raise fail("is not true/false")
            return value
        if self.value_type == "choice":
            if value not in self.choices:
                raise fail("is not a known choice")
            return value
        if self.value_type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail("is not an integer")
            if self.values and value not in self.values:
                raise fail("is not one of the allowed values")
            self._in_bounds(value, fail)
            if self.least_on is not None and 0 < value < self.least_on:
                raise fail("is too small")
            return value
        if self.value_type == "float":
            number = _as_float(value, fail)
            self._in_bounds(number, fail)
            return number
        if self.value_type == "range":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise fail("is not a [min, max] pair")
            low, high = (_as_float(v, fail) for v in value)
            self._in_bounds(low, fail)
            self._in_bounds(high, fail)
            if low > high:
                raise fail("has min > max")
            if self.max_span is not None and high - low > self.max_span:
                raise fail("spans too much")
            return (low, high)
        raise AssertionError(f"unknown knob value type {self.value_type!r}")

    def _in_bounds(self, number: float, fail) -> None:
        if self.minimum is not None and number < self.minimum:
            raise fail()
        if self.maximum is not None and number > self.maximum:
            raise fail()


def knob(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field carrying its Knob in the field metadata."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"knob": Knob(**spec)})
    return dataclasses.field(default=default, metadata={"knob": Knob(**spec)})


def knobs_of(cls: type) -> dict[str, Knob]:
    """Field name -> Knob, in declaration order, for a dataclass built with `knob()`."""
    return {f.name: f.metadata["knob"] for f in dataclasses.fields(cls) if "knob" in f.metadata}


def is_valid_unicode(text: str) -> bool:
    """False for strings with lone surrogates, which cannot be sent as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_float(value: Any, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail("is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise fail("is too large") from None
    if not math.isfinite(number):
        raise fail("is not finite")
    return number


def format_number(x: float | None) -> str:
    """Bounds as people write them: 4294967295 not 4.29497e+09, 1e-06 not 0.000001."""
    if x is None:
        return "any"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"
