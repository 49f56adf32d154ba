"""Say once what a value may be (`Rule`), and describe a user-facing setting once (`Knob`: a rule with its help
text and panel group).

`Rule.check` is the project's one validator of single values: the JobSpec checks its fields with their knobs,
and the message decoder (`wirefields.convert`) checks every text, number, flag and name in a message header with
the rule its `wire()` field declares, the value type taken from the annotation. The Blender panel builds its
properties (min/max/tooltip) and the CLI its flags from the knobs, so no two edges disagree about what is allowed,
and every refusal reads the same: `field = value problem; allowed: what`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import SpecError

#: What a value is: it decides the check, the CLI flag's form and the Blender property's type.
ValueType = Literal["text", "int", "float", "range", "bool", "choice"]
VALUE_TYPES: tuple[str, ...] = get_args(ValueType)
#: Longest text a rule allows unless it says otherwise; long enough for a traceback's last line.
MAX_TEXT = 4096


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What one value may be: its type and range, and the words that say so (`allowed`).

    A message field's rule leaves `value_type` to its annotation (`wirefields`); a knob always names it.
    """

    value_type: ValueType | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    max_len: int = MAX_TEXT
    #: For `text`: a regular expression the whole text must match (ids).
    pattern: str | None = None
    #: For `text`: whether control characters other than tab and newline may appear (a traceback's reason may
    #: quote them; a prompt or a path may not).
    control_chars: bool = True
    #: For `range`: the largest allowed max - min (e.g. 360 degrees of azimuth).
    max_span: float | None = None
    #: For `text`: must contain a non-space character.
    required: bool = False
    #: For `int`: the only values allowed (e.g. texture sizes), shown as a list in panels and errors.
    values: tuple[int, ...] = ()
    #: For `int`: 0 turns the setting off, and any other value must be at least this (a decimation to 1 triangle
    #: leaves no mesh). `minimum` stays 0, so a panel's slider can still be set back to off.
    least_on: int | None = None
    #: For a list or an object holding values (a message's containers): the most items it may hold.
    max_items: int = 10_000

    def __post_init__(self) -> None:
        # A typo here would otherwise surface as "unknown value type" on the first value checked.
        if self.value_type is not None and self.value_type not in VALUE_TYPES:
            raise ValueError(f"value_type {self.value_type!r} is not one of {', '.join(VALUE_TYPES)}")
        if self.values and self.value_type != "int":
            raise ValueError("values are for int rules only")
        if self.least_on is not None and (self.value_type != "int" or self.minimum != 0):
            raise ValueError("least_on is for int rules whose minimum is 0 (off)")

    def allowed(self) -> str:
        """Human text of what this knob accepts, used in every error message."""
        unit = f" {self.unit}" if self.unit else ""
        if self.value_type == "text":
            lead = "non-empty text" if self.required else "text"
            if self.pattern:  # the pattern bounds the length too (ids)
                return f"{lead} matching {self.pattern}"
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
            return f"an integer{self._between()}{unit}"
        if self.value_type == "float":
            return f"a number{self._between()}{unit}"
        span = f", max - min <= {format_number(self.max_span)}" if self.max_span is not None else ""
        return f"[min, max] with {format_number(self.minimum)} <= min <= max <= {format_number(self.maximum)}{unit}{span}"

    def _between(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f" from {format_number(low)} to {format_number(high)}"
        if low is not None:
            return f" of at least {format_number(low)}"
        return f" of at most {format_number(high)}" if high is not None else ""

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
            if not self.control_chars and any(ord(c) < 32 and c not in "\t\n" for c in value):
                raise fail("contains control characters")
            if not is_valid_unicode(value):
                raise fail("contains unpaired surrogates (not valid Unicode)")
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise fail("does not match")
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
        raise AssertionError(f"unknown value type {self.value_type!r}")

    def _in_bounds(self, number: float, fail) -> None:
        if self.minimum is not None and number < self.minimum:
            raise fail()
        if self.maximum is not None and number > self.maximum:
            raise fail()


@dataclass(frozen=True, kw_only=True)
class Knob(Rule):
    """One user-facing setting: a rule with its help text and panel group. Its text refuses control characters."""

    value_type: ValueType
    help: str
    group: str = "general"
    control_chars: bool = False
    max_len: int = 0


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
