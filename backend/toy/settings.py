"""The scene the toy prior is trained on, and how SDS should use it.

`RECOMMENDED_SPEC` goes into the weights' model_index.json as
`_recommended_spec`, so `generate --model toy-shapes` uses it unless the
user overrides a value. `TRAINING_SCENE` is the part the training renders are
drawn from: framing and background are part of what the prior learnt, and a
render framed differently is out of its distribution. The rest only steers
the SDS run (it may sample a subset of the trained views, never more).
"""

from __future__ import annotations

from shared import JobSpec

TRAINING_SCENE = {
    "background": "grey",           # a 1.4 M-parameter model cannot also learn random backdrops
    "camera_radius": [1.6, 2.0],
    "camera_fov": [40.0, 55.0],     # objects fill 40-75 % of a 32 px frame
}

RECOMMENDED_SPEC = {
    **TRAINING_SCENE,
    "render_resolution": 32, "views_per_step": 4, "guidance_scale": 20.0, "steps": 600,
    "t_anneal": 0.5, "mesh_resolution": 96, "stream_every": 100,
}


def training_spec(seed: int = 0) -> JobSpec:
    """The JobSpec whose camera, light, shading and background draws make the training images."""
    return JobSpec.from_dict({"prompt": "a cube", "seed": seed, **TRAINING_SCENE})
