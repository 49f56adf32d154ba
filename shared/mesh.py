"""The mesh that travels in `update`, `finished` and (as an init mesh) `submit`, and a final mesh's texture.

Each buffer class says how it travels: `WIRE_PARTS` (part name -> dtype, rank), `wire_arrays()` and
`from_wire()`; framing needs nothing else to carry a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BadBuffer, BadDtype, IndexOutOfRange, NonFinite

#: Wire dtypes: explicit little-endian, so big-endian hosts read them right too.
POSITION_DTYPE = np.dtype("<f4")
INDEX_DTYPE = np.dtype("<i4")
COLOR_DTYPE = np.dtype("u1")
MAX_INDEX = np.iinfo(np.int32).max
#: The most triangles a start mesh (`submit`'s `init_mesh`, `--init-from`) may have: the fit's time and memory
#: grow with it (about 3 s for 100k triangles on 2 cores). Decimate a bigger mesh first.
MAX_INIT_TRIANGLES = 500_000
#: Largest |coordinate| of a start mesh, in metres (1000 km). The job frames the mesh into its scene and maps every
#: mesh it sends back out again; far beyond this, float32 runs out on the way back (±3.4e38 became infinity and
#: failed the job at its first streamed mesh), and no scene an artist makes comes near it.
MAX_INIT_COORDINATE = 1e6
#: A start mesh whose triangles' total area is at most this share of its bounding box's largest side squared
#: has no surface: every triangle's corners lie on one line or one point (what is left is float rounding; a
#: real mesh of MAX_INIT_TRIANGLES triangles is some 1e-6 of it per triangle).
MIN_INIT_AREA = 1e-12
UV_DTYPE = np.dtype("<f4")
#: Largest |u| or |v| of a start mesh's own UVs (tiles beyond that lose float32 precision within a texel).
MAX_UV = 1e4
#: Largest side of a texture image (the largest `texture_size` a JobSpec may ask for).
MAX_TEXTURE_SIDE = 4096


@dataclass(frozen=True, eq=False)
class MeshData:
    """A triangle mesh in Blender's frame (Z up, metres).

    positions: float32 N x 3; triangles: int32 M x 3, every index in [0, N);
    colors: uint8 N x 4, sRGB albedo + alpha, one per vertex.
    Arrays decoded from the wire are read-only views of the received frames.
    """

    positions: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray

    WIRE_PARTS = {"positions": (POSITION_DTYPE, 2), "triangles": (INDEX_DTYPE, 2), "colors": (COLOR_DTYPE, 2)}

    def __post_init__(self) -> None:
        self.validate()

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"positions": self.positions, "triangles": self.triangles, "colors": self.colors}

    @classmethod
    def from_wire(cls, parts: dict[str, np.ndarray]) -> "MeshData":
        return cls(parts["positions"], parts["triangles"], parts["colors"])

    @classmethod
    def coerce(cls, positions, triangles, colors=None) -> "MeshData":
        """Convert what marching cubes and friends return (float64, uint64, no colour) to wire dtypes.

        Indices that do not fit int32 and non-finite positions still raise.
        """
        positions = np.ascontiguousarray(positions, dtype=POSITION_DTYPE).reshape(-1, 3)
        triangles = np.asarray(triangles).reshape(-1, 3)
        if triangles.size and (triangles.min() < 0 or triangles.max() > MAX_INDEX):
            raise IndexOutOfRange(f"triangle indices must be in [0, {MAX_INDEX}]")
        triangles = np.ascontiguousarray(triangles, dtype=INDEX_DTYPE)
        if colors is None:
            colors = np.full((len(positions), 4), 255, dtype=COLOR_DTYPE)
        colors = np.asarray(colors)
        if colors.ndim == 2 and colors.shape[1] == 3:
            alpha = np.full((len(colors), 1), 255, dtype=COLOR_DTYPE)
            colors = np.concatenate([colors.astype(COLOR_DTYPE, copy=False), alpha], axis=1)
        if colors.dtype != COLOR_DTYPE:
            raise BadDtype(f"colors must be uint8 sRGB, got {colors.dtype}")
        return cls(positions, triangles, np.ascontiguousarray(colors))

    @classmethod
    def empty(cls) -> "MeshData":
        return cls(np.zeros((0, 3), POSITION_DTYPE), np.zeros((0, 3), INDEX_DTYPE), np.zeros((0, 4), COLOR_DTYPE))

    @property
    def vertex_count(self) -> int:
        return len(self.positions)

    @property
    def triangle_count(self) -> int:
        return len(self.triangles)

    def validate(self) -> None:
        """Raise the specific ProtocolError for the first thing that is wrong."""
        _expect(self.positions, "positions", POSITION_DTYPE, 3)
        _expect(self.triangles, "triangles", INDEX_DTYPE, 3)
        _expect(self.colors, "colors", COLOR_DTYPE, 4)
        n = len(self.positions)
        if len(self.colors) != n:
            raise BadBuffer(f"colors has {len(self.colors)} rows but positions has {n}; need one colour per vertex")
        if self.triangles.size:
            low, high = int(self.triangles.min()), int(self.triangles.max())
            if low < 0 or high >= n:
                bad = low if low < 0 else high
                raise IndexOutOfRange(f"triangles index {bad} is outside [0, {n}) for {n} vertices")
        if self.positions.size and not np.isfinite(self.positions).all():
            raise NonFinite("positions contain NaN or infinity")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MeshData)
                and np.array_equal(self.positions, other.positions)
                and np.array_equal(self.triangles, other.triangles)
                and np.array_equal(self.colors, other.colors))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside


@dataclass(frozen=True, eq=False)
class VertexColors:
    """New colours for a mesh the client already has (an `update` of a job whose geometry is locked):
    uint8 N x 4 sRGB + alpha, one per vertex of that mesh, in its order."""

    colors: np.ndarray

    WIRE_PARTS = {"": (COLOR_DTYPE, 2)}

    def __post_init__(self) -> None:
        _expect(self.colors, "vertex_colors", COLOR_DTYPE, 4)

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"": self.colors}

    @classmethod
    def from_wire(cls, parts: dict[str, np.ndarray]) -> "VertexColors":
        return cls(parts[""])

    @property
    def vertex_count(self) -> int:
        return len(self.colors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VertexColors) and np.array_equal(self.colors, other.colors)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class CornerUVs:
    """A start mesh's own UV layout (`submit`'s `init_uvs`): float32 (3M) x 2, one per triangle corner in
    triangle order, finite. A job that keeps that mesh (`lock_geometry`) bakes its texture into these UVs."""

    uvs: np.ndarray

    WIRE_PARTS = {"": (UV_DTYPE, 2)}

    def __post_init__(self) -> None:
        _expect_uvs(self.uvs, "init_uvs")
        if self.uvs.size and np.abs(self.uvs).max() > MAX_UV:
            raise BadBuffer(f"init_uvs must lie within ±{MAX_UV:g} (a UV of {np.abs(self.uvs).max():.3g})")

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"": self.uvs}

    @classmethod
    def from_wire(cls, parts: dict[str, np.ndarray]) -> "CornerUVs":
        return cls(parts[""])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CornerUVs) and np.array_equal(self.uvs, other.uvs)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Texture:
    """A final mesh's UV layout and albedo image.

    uvs: float32 (3M) x 2, one per triangle corner in triangle order (Blender's loops), so the mesh itself stays
    welded where its charts are cut; (0, 0) is the image's bottom-left corner (Blender's and OBJ's convention).
    image: uint8 H x W x 3 or 4, sRGB albedo (+ alpha), row 0 at the top; each side 1 to MAX_TEXTURE_SIDE.
    """

    uvs: np.ndarray
    image: np.ndarray

    WIRE_PARTS = {"uvs": (UV_DTYPE, 2), "image": (COLOR_DTYPE, 3)}

    def __post_init__(self) -> None:
        _expect_uvs(self.uvs, "uvs")
        image = self.image
        if not isinstance(image, np.ndarray):
            raise BadBuffer(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != COLOR_DTYPE:
            raise BadDtype(f"image must be uint8 sRGB, got {image.dtype.name}")
        if image.ndim != 3 or image.shape[2] not in (3, 4) or not (0 < image.shape[0] <= MAX_TEXTURE_SIDE) \
                or not (0 < image.shape[1] <= MAX_TEXTURE_SIDE):
            raise BadBuffer(f"image must have shape (H, W, 3 or 4) with 1 <= H, W <= {MAX_TEXTURE_SIDE}, "
                            f"got {tuple(image.shape)}")

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"uvs": self.uvs, "image": self.image}

    @classmethod
    def from_wire(cls, parts: dict[str, np.ndarray]) -> "Texture":
        return cls(parts["uvs"], parts["image"])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in texels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def check_fits(self, mesh: MeshData, field: str = "texture") -> None:
        """Raise BadBuffer naming `field` unless there is one UV per corner of `mesh`'s triangles."""
        if mesh.triangle_count == 0:
            raise BadBuffer(f"{field}: a mesh with no triangles has nothing to texture")
        if len(self.uvs) != 3 * mesh.triangle_count:
            raise BadBuffer(f"{field}: uvs has {len(self.uvs)} rows; the mesh's {mesh.triangle_count} triangles "
                            f"need {3 * mesh.triangle_count} (one per corner)")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Texture) and np.array_equal(self.uvs, other.uvs)
                and np.array_equal(self.image, other.image))

    __hash__ = None  # type: ignore[assignment]


def check_init_mesh(mesh: MeshData, field: str = "init_mesh") -> None:
    """Raise BadBuffer naming `field` if `mesh` cannot start a job: no triangles, more than MAX_INIT_TRIANGLES, a
    coordinate beyond ±MAX_INIT_COORDINATE, all its vertices in one point (nothing to scale into the scene) or no
    triangle with area. One check for every edge a start mesh enters by (a submit's `init_mesh`, a client's or
    `generate`'s `--init-from` file, a server's `init_from` file), so each refuses in the same words.
    (NaN, infinity and indices out of range cannot reach it: MeshData refuses them.)"""
    m = mesh.triangle_count
    if m == 0:
        raise BadBuffer(f"{field} is empty: a start mesh needs 1 to {MAX_INIT_TRIANGLES} triangles, got 0")
    if m > MAX_INIT_TRIANGLES:
        raise BadBuffer(f"{field} has {m} triangles; a start mesh may have at most {MAX_INIT_TRIANGLES} "
                        "(decimate it first)")
    if mesh.positions.size and (largest := float(np.abs(mesh.positions).max())) > MAX_INIT_COORDINATE:
        raise BadBuffer(f"{field} has a coordinate of {largest:.3g}; a start mesh's coordinates must lie within "
                        f"±{MAX_INIT_COORDINATE:g} metres (scale it down or move it nearer the origin first)")
    used = mesh.positions[np.unique(mesh.triangles)].astype(np.float64)
    side = float((used.max(axis=0) - used.min(axis=0)).max())
    if side <= 0.0:
        raise BadBuffer(f"{field} has no extent: every vertex its triangles use is at one point")
    corners = mesh.positions.astype(np.float64)[mesh.triangles]
    area = float(np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]),
                                axis=1).sum()) / 2.0
    if area <= MIN_INIT_AREA * side * side:
        raise BadBuffer(f"{field} has no area: every triangle's corners lie on one line or one point; a start "
                        "mesh needs triangles with area")


def _expect(array: np.ndarray, name: str, dtype: np.dtype, width: int) -> None:
    if not isinstance(array, np.ndarray):
        raise BadBuffer(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise BadDtype(f"{name} must be {dtype.name}, got {array.dtype.name}")
    if array.ndim != 2 or array.shape[1] != width:
        raise BadBuffer(f"{name} must have shape (N, {width}), got {tuple(array.shape)}")


def _expect_uvs(uvs: np.ndarray, name: str) -> None:
    """float32 (K, 2), every value finite."""
    _expect(uvs, name, UV_DTYPE, 2)
    if uvs.size and not np.isfinite(uvs).all():
        raise NonFinite(f"{name} contain NaN or infinity")
