"""Prompt lists for batch generation: plain text, JSON, JSON Lines or CSV, each row a prompt plus JobSpec overrides.

A row that cannot be read is reported with its line number and skipped, so
one typo does not cost the rest of the batch. Only problems with the file as
a whole (unreadable, broken JSON syntax, a CSV without a `prompt` column)
raise `PromptFileError`.

- `.txt` (or anything else): one prompt per line; blank lines and lines
  starting with `#` are skipped.
- `.csv`: a header row naming `prompt` and any JobSpec fields (or `preset`);
  empty cells keep the batch's value. Ranges are written `10 40` or `10;40`.
- `.json`: a list whose items are prompts or objects `{"prompt": ..., field: value}`.
- `.jsonl`: one such item per line.

Besides the JobSpec fields (and `preset`), a row may name `init_mesh`: a
.glb/.gltf/.obj/.ply file on this machine (relative paths from the prompt
file's folder) to start from; with `lock_geometry` true its shape is kept
and only its colours are generated. Texturing a folder of assets is then
one command (`batch --prompts assets.csv --out textured/`):

    prompt,init_mesh,lock_geometry
    a weathered bronze statue,statue.glb,true
    a red ceramic vase,vase.obj,true
    a mossy boulder,scans/boulder.ply,false

A new format is a parser function `(text, out) -> None` plus its entries in
`SUFFIXES` and `PARSERS` at the end of this file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.errors import SpecError
from ..shared.jobspec import jobspec_knobs

#: A row's start mesh: a mesh file on this machine, read by Blender and sent with the submit (see batch_plan).
INIT_MESH = "init_mesh"
#: Columns a CSV header may name besides the JobSpec fields.
EXTRA_COLUMNS = ("preset", INIT_MESH)


class PromptFileError(ValueError):
    """The file as a whole cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class PromptRow:
    line: int
    #: "prompt" plus the row's overrides, with JSON types (CSV cells are converted by their knob's value_type).
    fields: dict[str, Any]

    @property
    def prompt(self) -> str:
        return str(self.fields.get("prompt", ""))


@dataclass(frozen=True)
class BadLine:
    line: int
    text: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "error": self.error}


@dataclass
class PromptFile:
    path: str
    rows: list[PromptRow] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def read_prompt_file(path: str | Path) -> PromptFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets save CSV with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"--prompts {path}: cannot read it ({exc})") from None
    parsed = parse_prompts(text, SUFFIXES.get(path.suffix.lower(), "txt"))
    parsed.path = str(path)
    return parsed


def parse_prompts(text: str, file_format: str) -> PromptFile:
    """Parse `text` as one of `PARSERS`' formats."""
    parse = PARSERS[file_format]
    out = PromptFile(path="")
    parse(text, out)
    return out


# --- plain text ------------------------------------------------------------------------------------


def _content_lines(text: str):
    """(line number, stripped line) for every line that is neither blank nor a `#` comment."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _parse_text(text: str, out: PromptFile) -> None:
    for number, line in _content_lines(text):
        out.rows.append(PromptRow(number, {"prompt": line}))


# --- JSON ------------------------------------------------------------------------------------------


def _row_from_json(item: Any, line: int, text: str, out: PromptFile) -> None:
    if isinstance(item, str):
        out.rows.append(PromptRow(line, {"prompt": item}))
    elif isinstance(item, dict):
        if "prompt" not in item:
            out.bad.append(BadLine(line, text, "no \"prompt\" in this item"))
        else:
            out.rows.append(PromptRow(line, dict(item)))
    else:
        out.bad.append(BadLine(line, text, "an item must be a prompt string or an object with a \"prompt\""))


def _parse_json_lines(text: str, out: PromptFile) -> None:
    for number, line in _content_lines(text):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            out.bad.append(BadLine(number, line, f"not JSON: {exc.msg} (column {exc.colno})"))
            continue
        _row_from_json(item, number, line, out)


def _parse_json(text: str, out: PromptFile) -> None:
    """A JSON list, read item by item so each row keeps the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        start = _skip_space(text, 0)
        if start >= len(text) or text[start] != "[":
            raise PromptFileError("a .json prompt file must hold a list of prompts or objects")
        position = _skip_space(text, start + 1)
        if position < len(text) and text[position] == "]":
            return
        while True:
            item, end = decoder.raw_decode(text, position)
            line = text.count("\n", 0, position) + 1
            _row_from_json(item, line, text[position:end][:200], out)
            position = _skip_space(text, end)
            if position < len(text) and text[position] == ",":
                position = _skip_space(text, position + 1)
            elif position < len(text) and text[position] == "]":
                return
            else:
                raise json.JSONDecodeError("expected ',' or ']' after an item", text, position)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


# --- CSV -------------------------------------------------------------------------------------------


def _parse_csv(text: str, out: PromptFile) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    knobs = jobspec_knobs()
    while header is None:
        try:
            first = next(reader)
        except StopIteration:
            return
        if any(cell.strip() for cell in first) and not first[0].lstrip().startswith("#"):
            header = [cell.strip() for cell in first]
    unknown = [name for name in header if name and name not in knobs and name not in EXTRA_COLUMNS]
    if "prompt" not in header or unknown:
        problem = f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "no 'prompt' column"
        raise PromptFileError(f"line {reader.line_num}: the CSV header has {problem}; columns are 'prompt', "
                              f"'preset', '{INIT_MESH}' and JobSpec fields: {', '.join(knobs)}")
    line = reader.line_num
    for cells in reader:
        number, line = line + 1, reader.line_num  # a quoted cell may span lines: report where the row starts
        if not any(cell.strip() for cell in cells) or cells[0].lstrip().startswith("#"):
            continue
        raw = ",".join(cells)[:200]
        if len(cells) > len(header):
            out.bad.append(BadLine(number, raw, f"{len(cells)} cells but the header names {len(header)} columns"))
            continue
        try:
            values = {name: csv_cell(name, cell) for name, cell in zip(header, cells) if name and cell.strip()}
        except SpecError as exc:
            out.bad.append(BadLine(number, raw, str(exc)))
            continue
        if "prompt" not in values:
            out.bad.append(BadLine(number, raw, "the prompt cell is empty"))
            continue
        out.rows.append(PromptRow(number, values))


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def csv_cell(name: str, cell: str) -> Any:
    """A CSV cell as the JSON value its field takes (SpecError naming the field and its range if it is not one)."""
    text = cell.strip()
    if name == "prompt" or name in EXTRA_COLUMNS:
        return text
    knob = jobspec_knobs()[name]
    fail = lambda problem: SpecError(name, text, knob.allowed(), problem)  # noqa: E731
    if knob.value_type in ("text", "choice"):
        return text
    if knob.value_type == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise fail("is not true/false")
    if knob.value_type == "int":
        try:
            return int(text)
        except ValueError:
            raise fail("is not an integer") from None
    if knob.value_type == "float":
        return _number(text, fail)
    parts = [p for p in re.split(r"[\s;]+", text.strip("[]() ")) if p]
    if len(parts) != 2:
        raise fail("is not a pair 'MIN MAX'")
    return [_number(p, fail) for p in parts]


def _number(text: str, fail) -> float:
    try:
        return float(text)
    except ValueError:
        raise fail("is not a number") from None


#: File suffix (lower case) -> format; any other suffix is read as plain text.
SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv"}
#: Format -> its parser, which appends rows and bad lines to the PromptFile it is given.
PARSERS = {"txt": _parse_text, "json": _parse_json, "jsonl": _parse_json_lines, "csv": _parse_csv}
