"""JobSpec values a model recommends, known to every edge (CLI, server, Blender panel, batch).

A prior is only as good as the scene it was trained on: the toy-shapes prior
learnt grey backdrops and a tight framing, so a render framed differently is
out of its distribution. Real models have tuned recipes too: Stable Diffusion
wants CFG 100, DeepFloyd IF CFG 20. `recommendations(model)` gives, first
match wins: a built-in model's values; a local folder's own `_recommended_spec`
(model_index.json); the values of the model's family (Stable Diffusion 1.x/2.x,
DeepFloyd IF stage I), told from a hub id's name or a folder's pipeline class.

Precedence everywhere, lowest first: JobSpec defaults, these, the preset, the
values given (flags, panel edits, batch columns, fields a submit carries).
Choosing a model in the panel applies them; the server applies them to the
fields a submitted spec leaves out: what needs no file as it decodes the submit,
a local folder's own only once admission allowed that folder
(`backend/server/admission.py`). Nothing here downloads or imports a model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .jobspec import model_source

#: The part of the toy prior's recommendations that its training renders are drawn from.
TOY_TRAINING_SCENE: dict[str, Any] = {
    "background": "grey",           # a 1.5 M-parameter model cannot also learn random backdrops
    "camera_radius": [1.6, 2.0],
    "camera_fov": [40.0, 55.0],     # objects fill 40-75 % of a 32 px frame
}

#: The toy-objects prior's training scene: random background colours, on which white shows (the recipe real
#: models use), and cameras that also look from below, where a grey backdrop and a rare underside let drips grow.
TOY_OBJECTS_TRAINING_SCENE: dict[str, Any] = {
    "background": "random",
    "camera_radius": [1.6, 2.0],
    "camera_fov": [40.0, 55.0],
    "camera_elevation": [-30.0, 90.0],
}

BUILTIN_RECOMMENDATIONS: dict[str, dict[str, Any]] = {
    "toy-shapes": {
        **TOY_TRAINING_SCENE,
        # A signed distance, not a density: a crisp solid whose mesh is its zero level set (docs/toy-prior.md
        # for the figures). 600 steps: at 400 a cube's corners are still bitten.
        "geometry": "sdf",
        "render_resolution": 32, "views_per_step": 4, "guidance_scale": 20.0, "steps": 600,
        "t_anneal": 0.5, "mesh_resolution": 96, "stream_every": 100,
    },
    "toy-objects": {
        **TOY_OBJECTS_TRAINING_SCENE,
        "geometry": "sdf",
        "render_resolution": 64, "views_per_step": 2, "guidance_scale": 20.0, "steps": 600,
        "t_anneal": 0.5, "mesh_resolution": 96, "stream_every": 100,
    },
}
#: The view-text reading of toy-objects' weights (backend/guidance/toy_objects.py) is scored as they are.
BUILTIN_RECOMMENDATIONS["toy-objects-view-text"] = BUILTIN_RECOMMENDATIONS["toy-objects"]


#: threestudio's tuned DreamFusion recipes (configs/dreamfusion-sd.yaml, dreamfusion-if.yaml): 64 px renders
#: scored for 10 000 steps at lr 0.01 with t in [0.02, 0.98]; CFG 100 for Stable Diffusion, 20 for IF, whose
#: pixel-space samples saturate at high guidance. Perp-Neg stays off (it doubles the prior's work per step);
#: turn it on with perp_neg 2 when a result has more than one face.
_DREAMFUSION_RECIPE: dict[str, Any] = {
    "guidance_scale": 100.0, "t_range": [0.02, 0.98], "steps": 10000, "render_resolution": 64,
    "learning_rate": 0.01, "views_per_step": 1, "background": "random", "stream_every": 250,
}
FAMILY_RECOMMENDATIONS: dict[str, dict[str, Any]] = {
    "stable-diffusion": _DREAMFUSION_RECIPE,
    "deepfloyd-if": {**_DREAMFUSION_RECIPE, "guidance_scale": 20.0},
}
#: diffusers pipeline classes (model_index.json `_class_name`) -> family.
FAMILY_PIPELINES = {"StableDiffusionPipeline": "stable-diffusion", "IFPipeline": "deepfloyd-if"}
#: Hub ids by name: SD 1.x / 2.x (not XL or 3), and IF stage I (II and III are upscalers, not priors).
_FAMILY_NAMES = (
    (re.compile(r"stable-diffusion-(v?1([-_.]|$)|2)", re.IGNORECASE), "stable-diffusion"),
    (re.compile(r"^DeepFloyd/IF-I-", re.IGNORECASE), "deepfloyd-if"),
)
#: A model_index.json is a few kB; anything far bigger is not one, and is not read.
_MAX_INDEX_BYTES = 1 << 20


def builtin_recommendations(model: str) -> dict[str, Any]:
    """A copy of what a built-in model recommends ({} for any other model)."""
    return _copy(BUILTIN_RECOMMENDATIONS.get(model, {}))


def recommendations(model: Any, read_files: bool = True) -> dict[str, Any]:
    """What `model` recommends (see the module docstring for the order); {} when nothing is known.

    `read_files` False: what is known without opening a file (a local folder then recommends nothing): what a
    server's decoder may apply, before its path policy has said whether the folder may be read at all.
    Never raises: a bad value or an unreadable folder recommends nothing, and the spec's own
    validation names the field.
    """
    if not isinstance(model, str) or not model:
        return {}
    if model in BUILTIN_RECOMMENDATIONS:
        return builtin_recommendations(model)
    if not read_files and model_source(model) == "local":
        return {}
    index = _local_index(model)
    if index is not None and isinstance(index.get("_recommended_spec"), dict):
        return _copy(index["_recommended_spec"])
    return _copy(FAMILY_RECOMMENDATIONS.get(_family(model, index) or "", {}))


def model_family(model: Any) -> str | None:
    """'stable-diffusion', 'deepfloyd-if' or None: the family a model's recipe comes from."""
    return _family(model, _local_index(model)) if isinstance(model, str) else None


def _family(model: str, index: dict | None) -> str | None:
    if index is not None:  # a folder says what it is; its path's name does not
        return FAMILY_PIPELINES.get(str(index.get("_class_name", "")))
    return next((name for pattern, name in _FAMILY_NAMES if pattern.search(model)), None)


def _local_index(model: str) -> dict | None:
    """A local model folder's model_index.json ({} when unreadable), or None when `model` is no folder."""
    try:
        if model_source(model) != "local":
            return None
        path = Path(model).expanduser() / "model_index.json"
        # A regular file only: a FIFO or device named model_index.json would block the reader.
        if not path.is_file() or path.stat().st_size > _MAX_INDEX_BYTES:
            return {}
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError):
        return {}
    return index if isinstance(index, dict) else {}


def _copy(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list) else v for k, v in values.items()}
