"""Where an artist's mesh sits in the training scene, and back.

The prior is trained on objects of about half a metre around the origin, and
the JobSpec's cameras frame that (shared/jobspec.py), so a start mesh is
centred and scaled into it; every mesh the job streams or writes is mapped
back, so results land exactly where the artist's object is, at its size. The
mapping is a uniform scale and a shift: normals, winding and proportions are
unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

#: A start mesh's largest half-extent in the scene (metres): the size of the toy prior's shapes (0.4 - 0.5).
FRAMED_HALF_EXTENT = 0.45


@dataclass(frozen=True)
class SceneMapping:
    """scene = (world - centre) * scale; the identity for jobs that start from a blob."""

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    @classmethod
    def framing(cls, positions: np.ndarray, half_extent: float = FRAMED_HALF_EXTENT) -> "SceneMapping":
        """The mapping that puts the bounding box of `positions` (N x 3, world) at the origin with its largest
        half-extent `half_extent`."""
        points = np.asarray(positions, np.float64)
        low, high = points.min(axis=0), points.max(axis=0)
        extent = float((high - low).max()) / 2.0
        if not np.isfinite(extent) or extent <= 0.0:
            raise ValueError("a mesh with no extent cannot be framed")
        return cls(tuple(float(c) for c in (low + high) / 2.0), half_extent / extent)

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.centre == (0.0, 0.0, 0.0)

    def to_scene(self, positions: np.ndarray) -> np.ndarray:
        return ((np.asarray(positions, np.float64) - np.array(self.centre)) * self.scale).astype(np.float32)

    def to_world(self, positions: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return np.asarray(positions, np.float32)
        return (np.asarray(positions, np.float64) / self.scale + np.array(self.centre)).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({"centre": list(self.centre), "scale": self.scale})

    @classmethod
    def from_json(cls, text: str) -> "SceneMapping":
        data = json.loads(text)
        centre = tuple(float(c) for c in data["centre"])
        if len(centre) != 3:
            raise ValueError("a scene mapping's centre has three coordinates")
        return cls(centre, float(data["scale"]))  # type: ignore[arg-type]
