"""From a prompt file and the batch's flags to validated JobSpecs, one per runnable row.

Precedence per row, lowest first: the JobSpec defaults, what the row's model
recommends (the built-in toy prior's scene, for example), the preset (the
row's, else the batch's), the batch's flags, the row's own fields. A row whose
spec does not validate becomes a `BadLine` naming the field and its range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..shared.errors import SpecError
from ..shared.jobspec import DEFAULT_MODEL, JobSpec, preset_values
from ..shared.names import slugify
from .prompt_file import BadLine, PromptFile


@dataclass(frozen=True)
class BatchItem:
    #: 1-based position among the runnable rows ("[2/5]" in the progress lines).
    index: int
    line: int
    slug: str
    spec: JobSpec

    @property
    def prompt(self) -> str:
        return self.spec.prompt


def plan_batch(prompts: PromptFile, flags: Mapping[str, Any], preset: str | None = None,
               model_defaults: Callable[[str], Mapping[str, Any]] | None = None,
               default_model: str = DEFAULT_MODEL) -> tuple[list[BatchItem], list[BadLine]]:
    """Specs for every row that validates; the rest as bad lines (with the file's own bad lines first)."""
    items: list[BatchItem] = []
    bad = list(prompts.bad)
    slugs: set[str] = set()
    for row in prompts.rows:
        fields = dict(row.fields)
        model = fields.get("model", flags.get("model", default_model))
        values: dict[str, Any] = {"model": default_model}
        try:
            if model_defaults is not None and isinstance(model, str):
                values.update(model_defaults(model))
            row_preset = fields.pop("preset", preset)
            if row_preset is not None:
                values.update(preset_values(row_preset))
            values.update(flags)
            values.update(fields)
            spec = JobSpec.from_dict(values)
        except SpecError as exc:
            bad.append(BadLine(row.line, row.prompt[:200], str(exc)))
            continue
        slug = unique_slug(spec.prompt, slugs)
        items.append(BatchItem(len(items) + 1, row.line, slug, spec))
    bad.sort(key=lambda b: b.line)
    return items, bad


def unique_slug(prompt: str, taken: set[str]) -> str:
    """slugify, with -2, -3, ... for repeats (the same prompt twice with two seeds must not overwrite)."""
    base = slugify(prompt)
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    taken.add(slug)
    return slug
