"""JobSpec values the built-in models recommend, known to every edge (CLI, server, Blender panel).

A prior is only as good as the scene it was trained on: the toy-shapes prior
learnt grey backdrops and a tight framing, so a render framed differently is
out of its distribution. Selecting a built-in model in the panel applies these
values; the CLI applies them unless a flag overrides one. Local model folders
recommend their own through `_recommended_spec` in model_index.json.
"""

from __future__ import annotations

from typing import Any

#: The part of the toy prior's recommendations that its training renders are drawn from.
TOY_TRAINING_SCENE: dict[str, Any] = {
    "background": "grey",           # a 1.5 M-parameter model cannot also learn random backdrops
    "camera_radius": [1.6, 2.0],
    "camera_fov": [40.0, 55.0],     # objects fill 40-75 % of a 32 px frame
}

BUILTIN_RECOMMENDATIONS: dict[str, dict[str, Any]] = {
    "toy-shapes": {
        **TOY_TRAINING_SCENE,
        # A signed distance, not a density: a crisp solid whose mesh is its zero level set (README, toy
        # section, for the figures). 600 steps: at 400 a cube's corners are still bitten.
        "geometry": "sdf",
        "render_resolution": 32, "views_per_step": 4, "guidance_scale": 20.0, "steps": 600,
        "t_anneal": 0.5, "mesh_resolution": 96, "stream_every": 100,
    },
}


def builtin_recommendations(model: str) -> dict[str, Any]:
    """A copy of what a built-in model recommends ({} for any other model)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in BUILTIN_RECOMMENDATIONS.get(model, {}).items()}
