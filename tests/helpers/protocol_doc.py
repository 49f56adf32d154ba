"""Generate the reference tables of PROTOCOL.md from the code, so the doc cannot drift.

    python -m tests.helpers.protocol_doc --write   # refresh PROTOCOL.md in place

`tests/test_layout.py` fails when PROTOCOL.md's tables differ from these.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from pathlib import Path

from blender_dreamfusion.shared import MESSAGE_TYPES, JobSpec, jobspec_knobs
from blender_dreamfusion.shared.framing import field_buffer_names
from blender_dreamfusion.shared.geometry_options import GEOMETRY_OPTIONS, option_knobs
from blender_dreamfusion.shared.knobs import format_number
from blender_dreamfusion.shared.messages import BOTH, CLIENT, JobInfo, buffer_fields
from blender_dreamfusion.shared.wirefields import field_rule, resolved_hints

DOC = Path(__file__).resolve().parents[2] / "PROTOCOL.md"
_SENDERS = {CLIENT: "client → server", BOTH: "either way", "server": "server → client"}


def _json_type(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return f"{_json_type(inner)} or null"
    if origin is list:
        return f"array of {_json_type(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"object of {_json_type(typing.get_args(tp)[1])}"
    if tp is JobSpec:
        return "JobSpec object"
    if dataclasses.is_dataclass(tp):
        return f"{tp.__name__} object"
    if origin is typing.Literal:  # a closed set of names: its choices are listed with the limits
        return "string"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]


def _limits_text(f: dataclasses.Field) -> str:
    lim = field_rule(f)
    parts = []
    if lim.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in lim.choices))
    elif lim.pattern:
        parts.append(f"matches `{lim.pattern}`")
    if lim.minimum is not None or lim.maximum is not None:
        parts.append(f"{format_number(lim.minimum)} to {format_number(lim.maximum)}")
    return "; ".join(parts)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "optional, default `" + ("null" if f.default is None else repr(f.default).replace("'", '"')) + "`"
    if f.default_factory is not dataclasses.MISSING:
        return f"optional, default `{f.default_factory()!r}`"
    return "**required**"


def _field_rows(cls) -> list[str]:
    hints = resolved_hints(cls)
    skip = buffer_fields(cls) if cls is not JobInfo else frozenset()
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name == "request_id":
            continue
        rows.append(f"| `{f.name}` | {_json_type(hints[f.name])} | {_default_text(f)} | {_limits_text(f)} |")
    return rows


def message_tables() -> str:
    out = []
    for name, cls in MESSAGE_TYPES.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ and "Base of" not in cls.__doc__ else ""
        out.append(f"#### `{name}` ({_SENDERS[cls.SENDER]})\n")
        if doc and not doc.startswith(cls.__name__ + "("):
            out.append(doc + "\n")
        rows = _field_rows(cls)
        if rows:
            out += ["| field | JSON type | presence | allowed |", "|---|---|---|---|", *rows]
        else:
            out.append("No fields besides `type` (and the optional `request_id`).")
        for field in dataclasses.fields(cls):
            if field.name not in buffer_fields(cls):
                continue
            names = field_buffer_names(cls, field.name)
            need = "required" if field.default is dataclasses.MISSING else "optional"
            listed = ", ".join(f"`{b}`" for b in names)
            out.append(f"\n`{field.name}` ({need}) travels as buffer{'s' if len(names) > 1 else ''} {listed}.")
        out.append("")
    out.append("#### `JobInfo` object (in `status_reply` and `list_reply`)\n")
    out += ["| field | JSON type | presence | allowed |", "|---|---|---|---|", *_field_rows(JobInfo), ""]
    return "\n".join(out)


def jobspec_table() -> str:
    rows = ["| field | type | default (`standard`) | allowed | meaning |", "|---|---|---|---|---|"]
    fields = {f.name: f for f in dataclasses.fields(JobSpec)}
    owners = option_knobs()
    for name, knob in jobspec_knobs().items():
        if name in owners:  # a geometry's option (shared/geometry_options.py): its default is declared there
            f = {f.name: f for f in dataclasses.fields(GEOMETRY_OPTIONS[owners[name][0]])}[name]
        else:
            f = fields[name]
        if f.default is not dataclasses.MISSING:
            default = _json_default(f.default)
        elif name == "seed":
            default = "random, recorded"
        else:
            default = "**required**"
        rows.append(f"| `{name}` | {knob.value_type} | {default} | {knob.allowed()} | {knob.help} |")
    return "\n".join(rows)


def _json_default(value) -> str:
    default = f"`{list(value) if isinstance(value, tuple) else value!r}`".replace("'", '"')
    return default.replace("True", "true").replace("False", "false")


SECTIONS = {"messages": message_tables, "jobspec": jobspec_table}


def render(text: str) -> str:
    for key, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {key}:begin -->\n).*?(<!-- {key}:end -->)", re.DOTALL)
        text, count = pattern.subn(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
        if count != 1:
            raise SystemExit(f"PROTOCOL.md needs exactly one <!-- {key}:begin/end --> block")
    return text


if __name__ == "__main__":
    current = DOC.read_text(encoding="utf-8")
    fresh = render(current)
    if "--write" in sys.argv:
        DOC.write_text(fresh, encoding="utf-8")
    else:
        print(fresh)
