"""Typed header fields: turn JSON values into the annotated Python types, or say why not.

Supports the handful of types the messages use: str, int, float, bool, a
`Literal` of names, `X | None`, `list[X]`, `dict[str, X]`, nested dataclasses (by field) and
JobSpec (through its own validation). Constraints ride in the field
metadata set by `wire()`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import BadField, BadJobSpec, MissingField, SpecError, UnknownField
from .jobspec import JobSpec
from .knobs import format_number, is_valid_unicode
from .recommended import recommendations

#: Default cap on any text field; long enough for a traceback's last line.
MAX_TEXT = 4096
MAX_ITEMS = 10_000


@dataclass(frozen=True)
class Limits:
    max_len: int = MAX_TEXT
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_items: int = MAX_ITEMS


def wire(default: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A message field with limits (max_len, pattern, minimum, maximum, choices, max_items)."""
    meta = {"limits": Limits(**limits)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_limits(field: dataclasses.Field) -> Limits:
    return field.metadata.get("limits", Limits())


@lru_cache(maxsize=None)
def resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def convert(tp: Any, value: Any, path: str, limits: Limits = Limits()) -> Any:
    """`value` as type `tp`, or BadField naming `path` and what was expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) != 1:
            raise AssertionError(f"unsupported union {tp}")
        return convert(inner[0], value, path, limits)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise BadField(f"{path} must be a list, got {_json_type(value)}")
        if len(value) > limits.max_items:
            raise BadField(f"{path} has {len(value)} items; at most {limits.max_items} allowed")
        return [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise BadField(f"{path} must be an object, got {_json_type(value)}")
        if len(value) > limits.max_items:
            raise BadField(f"{path} has {len(value)} entries; at most {limits.max_items} allowed")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > limits.max_len or not is_valid_unicode(k):
                raise BadField(f"{path} keys must be text of at most {limits.max_len} characters")
            out[k] = convert(item_tp, v, f"{path}.{k}", limits)
        return out
    if tp is JobSpec:
        if isinstance(value, JobSpec):
            return value
        try:
            # Fields a sender leaves out take what its model recommends (a partial spec from a script), as far as
            # that is known without opening a file: a local folder's own are admission's to read, once its path
            # policy allowed the folder (a decoder applies no policy).
            return JobSpec.from_dict(value, model_defaults=lambda model: recommendations(model, read_files=False))
        except SpecError as exc:
            raise BadJobSpec(exc) from None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build_dataclass(tp, value, path)
    if tp is str:
        return _text(value, path, limits)
    if origin is typing.Literal:  # a closed set of names (a job's state): text, one of them
        return _text(value, path, dataclasses.replace(limits, choices=limits.choices or typing.get_args(tp)))
    if tp is bool:
        if not isinstance(value, bool):
            raise BadField(f"{path} must be true or false, got {_json_type(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadField(f"{path} must be an integer, got {_json_type(value)}")
        _bounds(value, path, limits)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadField(f"{path} must be a number, got {_json_type(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise BadField(f"{path} is too large") from None
        if not math.isfinite(number):
            raise BadField(f"{path} must be finite, got {value!r}")
        _bounds(number, path, limits)
        return number
    raise AssertionError(f"unsupported field type {tp!r} at {path}")


def build_dataclass(cls: type, data: Any, path: str, skip: frozenset[str] = frozenset(),
                    extra: dict[str, Any] | None = None) -> Any:
    """Construct `cls` from a JSON object, checking unknown, missing and mistyped fields.

    Fields named in `skip` are not taken from `data`; `extra` supplies them (buffers).
    """
    if not isinstance(data, dict):
        raise BadField(f"{path} must be an object, got {_json_type(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    for key in data:
        if key not in fields:
            where = f" in {path}" if path else ""
            raise UnknownField(f"unknown field {key!r}{where}; known: {', '.join(fields) or 'none'}")
    hints = resolved_hints(cls)
    values = {}
    for name, f in fields.items():
        label = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MissingField(f"missing field {label!r}")
            continue
        values[name] = convert(hints[name], data[name], label, field_limits(f))
    return cls(**values, **(extra or {}))


def check_fields(obj: Any, skip: frozenset[str] = frozenset()) -> None:
    """Validate a dataclass built in Python with the same rules as one decoded from JSON."""
    hints = resolved_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        checked = convert(hints[f.name], getattr(obj, f.name), f.name, field_limits(f))
        object.__setattr__(obj, f.name, checked)


def to_json_value(value: Any) -> Any:
    """The JSON form of a checked field value."""
    if isinstance(value, JobSpec):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    return value


def _text(value: Any, path: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise BadField(f"{path} must be text, got {_json_type(value)}")
    if not is_valid_unicode(value):
        raise BadField(f"{path} contains unpaired surrogates (not valid Unicode)")
    if len(value) > limits.max_len:
        raise BadField(f"{path} is {len(value)} characters long; at most {limits.max_len} allowed")
    if limits.choices and value not in limits.choices:
        raise BadField(f"{path} = {value!r} is not one of {', '.join(limits.choices)}")
    if limits.pattern and not re.fullmatch(limits.pattern, value):
        raise BadField(f"{path} = {value[:64]!r} does not match {limits.pattern}")
    return value


def _bounds(number: float, path: str, limits: Limits) -> None:
    low, high = limits.minimum, limits.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        raise BadField(f"{path} = {number!r} is out of range; allowed {format_number(low)} to {format_number(high)}")



def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "text", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)
