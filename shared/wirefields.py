"""Typed header fields: turn JSON values into the annotated Python types, or say why not.

Supports the handful of types the messages use: str, int, float, bool, a
`Literal` of names, `X | None`, `list[X]`, `dict[str, X]`, nested dataclasses (by field) and
JobSpec (through its own validation). Each field's `Rule` (knobs.py, the one validator of single values) rides
in the field metadata set by `wire()`; its value type comes from the annotation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any

from .errors import BadField, BadJobSpec, MissingField, SpecError, UnknownField
from .jobspec import JobSpec
from .knobs import Rule, is_valid_unicode
from .recommended import recommendations

_NO_RULE = Rule()


def wire(default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A message field with a Rule (max_len, pattern, minimum, maximum, choices, max_items, ...)."""
    meta = {"rule": Rule(**rule)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_rule(field: dataclasses.Field) -> Rule:
    return field.metadata.get("rule", _NO_RULE)


@lru_cache(maxsize=None)
def resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@lru_cache(maxsize=1024)
def rule_for(tp: Any, rule: Rule) -> Rule:
    """`rule` with the value type its field's annotation `tp` gives (a Literal's names as its choices)."""
    if typing.get_origin(tp) is typing.Literal:
        return dataclasses.replace(rule, value_type="choice", choices=rule.choices or typing.get_args(tp))
    if tp is str:
        return dataclasses.replace(rule, value_type="choice" if rule.choices else "text")
    return dataclasses.replace(rule, value_type={bool: "bool", int: "int", float: "float"}[tp])


def convert(tp: Any, value: Any, path: str, rule: Rule = _NO_RULE) -> Any:
    """`value` as type `tp`, or BadField naming `path` and what was allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) != 1:
            raise AssertionError(f"unsupported union {tp}")
        return convert(inner[0], value, path, rule)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        allowed = f"a list of at most {rule.max_items} items"
        if not isinstance(value, (list, tuple)):
            raise _bad(path, value, allowed, "is not a list")
        if len(value) > rule.max_items:
            raise _bad(path, value, allowed, f"has {len(value)} items")
        return [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        allowed = f"an object of at most {rule.max_items} entries, keys text of at most {rule.max_len} characters"
        if not isinstance(value, dict):
            raise _bad(path, value, allowed, "is not an object")
        if len(value) > rule.max_items:
            raise _bad(path, value, allowed, f"has {len(value)} entries")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > rule.max_len or not is_valid_unicode(k):
                raise _bad(path, k, allowed, "has a key that is not allowed")
            out[k] = convert(item_tp, v, f"{path}.{k}", rule)
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
    if tp not in (str, int, float, bool) and origin is not typing.Literal:
        raise AssertionError(f"unsupported field type {tp!r} at {path}")
    try:
        return rule_for(tp, rule).check(path, value)
    except SpecError as exc:
        raise BadField(str(exc)) from None


def build_dataclass(cls: type, data: Any, path: str, skip: frozenset[str] = frozenset(),
                    extra: dict[str, Any] | None = None) -> Any:
    """Construct `cls` from a JSON object, checking unknown, missing and mistyped fields.

    Fields named in `skip` are not taken from `data`; `extra` supplies them (buffers).
    """
    if not isinstance(data, dict):
        raise _bad(path or "message", data, "an object of fields", "is not an object")
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
        values[name] = convert(hints[name], data[name], label, field_rule(f))
    return cls(**values, **(extra or {}))


def check_fields(obj: Any, skip: frozenset[str] = frozenset()) -> None:
    """Validate a dataclass built in Python with the same rules as one decoded from JSON."""
    hints = resolved_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        checked = convert(hints[f.name], getattr(obj, f.name), f.name, field_rule(f))
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


def _bad(path: str, value: Any, allowed: str, problem: str) -> BadField:
    """A container's refusal in the words of a Rule's."""
    return BadField(str(SpecError(path, value, allowed, problem)))
