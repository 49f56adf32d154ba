"""The scene the toy prior is trained on, and how SDS should use it.

Both live in shared/recommended.py so the Blender panel knows them too.
`TRAINING_SCENE` is the part the training renders are drawn from: framing
and background are part of what the prior learnt. The rest of
`RECOMMENDED_SPEC` only steers the SDS run (it may sample a subset of the
trained views, never more), so tuning SDS cannot change what a retrain makes.
"""

from __future__ import annotations

from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.recommended import BUILTIN_RECOMMENDATIONS, TOY_TRAINING_SCENE

TRAINING_SCENE = TOY_TRAINING_SCENE
RECOMMENDED_SPEC = BUILTIN_RECOMMENDATIONS["toy-shapes"]


def training_spec(seed: int = 0) -> JobSpec:
    """The JobSpec whose camera, light, shading and background draws make the training images."""
    return JobSpec.from_dict({"prompt": "a cube", "seed": seed, **TRAINING_SCENE})
