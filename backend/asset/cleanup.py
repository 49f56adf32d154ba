"""Final-mesh clean-up: Taubin smoothing that keeps the shape's size, and quadric decimation to a face count."""

from __future__ import annotations

import numpy as np

#: Taubin's shrink (lambda) and inflate (mu) steps; |mu| slightly above lambda so the two cancel on average
#: and the shape neither shrinks nor swells (Taubin 1995), unlike plain Laplacian smoothing.
TAUBIN_LAMBDA = 0.5
TAUBIN_MU = 0.53
#: Decimation stops within this share above the face count, or after MAX_PASSES passes.
TOLERANCE = 0.02
MAX_PASSES = 4


def smooth(positions: np.ndarray, triangles: np.ndarray, iterations: int) -> np.ndarray:
    """Taubin-smoothed vertex positions (float64 N x 3); the triangles are unchanged, so a closed mesh stays
    closed."""
    import trimesh
    from trimesh.smoothing import filter_taubin

    positions = np.array(positions, np.float64)
    used, local = np.unique(np.asarray(triangles, np.int64), return_inverse=True)  # trimesh sizes by used ones
    mesh = trimesh.Trimesh(positions[used], local.reshape(-1, 3), process=False)
    # trimesh counts half-steps (a shrink, then an inflate): one Taubin iteration is two of them.
    filter_taubin(mesh, lamb=TAUBIN_LAMBDA, nu=TAUBIN_MU, iterations=2 * int(iterations))
    positions[used] = mesh.vertices
    return positions


def decimate(positions: np.ndarray, triangles: np.ndarray, face_count: int) -> tuple[np.ndarray, np.ndarray]:
    """About `face_count` triangles by quadric edge collapse (fast-simplification), which keeps the silhouette
    and the topology (a closed mesh stays closed). A mesh already at or under the count is returned as it is."""
    positions = np.asarray(positions, np.float64)
    triangles = np.asarray(triangles, np.int64)
    if face_count <= 0 or len(triangles) <= face_count:
        return positions, triangles
    import fast_simplification

    # One pass can stop short of a large reduction (its collapse threshold grows over a fixed number of
    # iterations); passes continue while they get closer.
    points, faces = positions, triangles
    for _ in range(MAX_PASSES):
        points, faces = fast_simplification.simplify(points, faces, target_count=int(face_count))
        points, faces = _compact(np.asarray(points, np.float64), np.asarray(faces, np.int64))
        if len(faces) <= face_count * (1 + TOLERANCE):
            break
    return points, faces


def _compact(positions: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop collapsed triangles and the vertices no triangle uses."""
    t = triangles
    t = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
    used, inverse = np.unique(t, return_inverse=True)
    return positions[used], inverse.reshape(-1, 3)
