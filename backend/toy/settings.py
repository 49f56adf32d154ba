"""The scene the toy prior is trained on, which SDS must then render the same way.

These values go into the weights' model_index.json as `_recommended_spec`,
so `generate --model toy-shapes` uses them unless the user overrides them.
The framing and background are part of what the prior learnt: a render
framed or lit differently is out of its distribution.
"""

from __future__ import annotations

from shared import JobSpec

RECOMMENDED_SPEC = {
    # The scene: the same for the training renders and for SDS.
    "background": "grey",           # a 1.4 M-parameter model cannot also learn random backdrops
    "camera_radius": [1.6, 2.0],
    "camera_fov": [40.0, 55.0],     # objects fill 40-75 % of a 32 px frame
    # The run.
    "render_resolution": 32, "views_per_step": 4, "guidance_scale": 20.0, "steps": 600,
    "t_anneal": 0.5, "mesh_resolution": 96, "stream_every": 100,
}


def training_spec(seed: int = 0) -> JobSpec:
    """The JobSpec whose camera, light, shading and background draws make the training images."""
    return JobSpec.from_dict({"prompt": "a cube", "seed": seed, **RECOMMENDED_SPEC})
