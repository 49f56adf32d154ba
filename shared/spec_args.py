"""Command-line flags for every JobSpec field, generated from the knobs.

Used by `dreamfusion-backend generate` / `client submit` and by the Blender
batch command, so each CLI accepts the same flags with the same ranges.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping

from .errors import SpecError
from .jobspec import DEFAULT_MODEL, PRESETS, JobSpec, jobspec_knobs, preset_values

_POSITIONAL = {"prompt"}


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--preset` and one flag per JobSpec field (except the prompt). Unset flags stay unset."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                        help="starting values (default: standard)")
    for name, spec in jobspec_knobs().items():
        if name in _POSITIONAL:
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{spec.help} ({spec.allowed()})"}
        if spec.value_type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.value_type == "range":
            kwargs.update(nargs=2, type=float, metavar=("MIN", "MAX"))
        elif spec.value_type == "choice":
            kwargs["choices"] = spec.choices
        elif spec.value_type == "int":
            kwargs["type"] = int
        elif spec.value_type == "float":
            kwargs["type"] = float
        parser.add_argument(flag_name(name), **kwargs)


def spec_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser, prompt: str,
                   model_defaults: Callable[[str], Mapping[str, Any]] | None = None) -> JobSpec:
    """The validated JobSpec; a bad value exits through `parser.error` naming the flag and range.

    Precedence, lowest first: JobSpec defaults, `model_defaults(model)` (what the chosen model
    recommends), the `--preset`, the flags given.
    """
    explicit = {k: v for k, v in vars(args).items() if k in jobspec_knobs()}
    values: dict[str, Any] = {}
    if model_defaults is not None:
        values.update(model_defaults(explicit.get("model", DEFAULT_MODEL)))
    if "preset" in vars(args):
        values.update(preset_values(args.preset))
    values.update(explicit)
    values["prompt"] = prompt
    try:
        return JobSpec.from_dict(values)
    except SpecError as exc:
        flag = "PROMPT" if exc.field == "prompt" else flag_name(exc.field)
        parser.error(f"{flag}: {exc}")
        raise  # parser.error exits; this keeps type checkers honest
