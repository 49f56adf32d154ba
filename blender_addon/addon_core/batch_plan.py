"""From a prompt file and the batch's flags to validated JobSpecs, one per runnable row.

Precedence per row, lowest first: the JobSpec defaults, what the row's model
recommends (the built-in toy prior's scene, for example), the preset (the
row's, else the batch's), the batch's flags, the row's own fields. A row whose
spec does not validate becomes a `BadLine` naming the field and its range.

A row's `init_mesh` (a .glb/.gltf/.obj/.ply file on this machine, relative to
the prompt file's folder) makes it start from that mesh: `init = "mesh"`, and
Blender reads the file and sends the mesh with the submit. A path that is not
such a file is refused here, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..shared.errors import SpecError
from ..shared.formats import READABLE
from ..shared.jobspec import DEFAULT_MODEL, JobSpec, preset_values
from ..shared.names import slugify
from .prompt_file import INIT_MESH, BadLine, PromptFile



@dataclass(frozen=True)
class BatchItem:
    #: 1-based position among the runnable rows ("[2/5]" in the progress lines).
    index: int
    line: int
    slug: str
    spec: JobSpec
    #: The start mesh's file (absolute), sent with the submit; "" for none.
    init_mesh: str = ""

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
    folder = Path(prompts.path).parent if prompts.path else Path.cwd()
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
            init_mesh = _init_mesh(fields, folder)
            values.update(flags)
            values.update(fields)
            if init_mesh:  # the mesh travels with the submit, so the backend is named no file
                values.update(init="mesh", init_from="")
            spec = JobSpec.from_dict(values)
        except SpecError as exc:
            bad.append(BadLine(row.line, row.prompt[:200], str(exc)))
            continue
        slug = unique_slug(spec.prompt, slugs)
        items.append(BatchItem(len(items) + 1, row.line, slug, spec, init_mesh))
    bad.sort(key=lambda b: b.line)
    return items, bad


def _init_mesh(fields: dict[str, Any], folder: Path) -> str:
    """Pop the row's `init_mesh` and resolve it (relative to the prompt file's folder); SpecError naming the
    field when it is not a start-mesh file, or when the row also names another start."""
    value = fields.pop(INIT_MESH, None)
    if value in (None, ""):
        return ""
    allowed = f"a {'/'.join(READABLE)} file on this machine (relative to the prompt file's folder)"
    if not isinstance(value, str):
        raise SpecError(INIT_MESH, value, allowed, "is not a path")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if path.suffix.lower() not in READABLE:
        raise SpecError(INIT_MESH, value, allowed, "is not a mesh file of a kind Blender reads here")
    if not path.is_file():
        raise SpecError(INIT_MESH, value, allowed, "is not a file" if path.exists() else "does not exist")
    if fields.get("init", "mesh") != "mesh" or fields.get("init_from"):
        raise SpecError(INIT_MESH, value, f"{allowed}, in a row that names no other start (init, init_from)",
                        "is given with another start")
    return str(path.resolve())


def unique_slug(prompt: str, taken: set[str]) -> str:
    """slugify, with -2, -3, ... for repeats (the same prompt twice with two seeds must not overwrite)."""
    base = slugify(prompt)
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    taken.add(slug)
    return slug
