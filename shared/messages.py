"""The message types of protocol `dreamfusion/1`, as typed dataclasses.

Each class names its wire `type` and who may send it. Header fields are
the dataclass fields; `MeshData`, `VertexColors`, `Texture` and `Image` fields travel as raw buffers
(frames 2...n), never inside the JSON. Constructing a message validates it
with the same rules decoding applies, so neither side can send what the
other would refuse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .errors import BadBuffer, BadDtype, BadField, ProtocolError, SpecError, safe_text
from .jobspec import MAX_CANDIDATES, SEED_MAX, JobSpec
from .mesh import COLOR_DTYPE, CornerUVs, MeshData, Texture, VertexColors, check_init_mesh
from .states import JOB_STATES, JobState
from .version import PROTOCOL_VERSION
from .knobs import MAX_TEXT
from .wirefields import check_fields, wire

CLIENT = "client"
SERVER = "server"
BOTH = "both"

ID_PATTERN = r"[A-Za-z0-9_.:-]{1,64}"
#: What a job is doing, as `progress` says: waiting in line, loading its model, fitting its start mesh, taking
#: SDS steps, extracting its final mesh, baking textures (the last two after the final step).
JOB_PHASES = ("queued", "loading_model", "fitting_mesh", "training", "extracting", "baking")
#: Jobs per `list_reply` / `status_reply` page: the default, and the most a client may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 200
MAX_PREVIEW_SIDE = 4096
MAX_STEP = 10**9
MAX_SECONDS = 10.0**9
#: Who chose a best-of-N job's candidate (`chosen`).
CHOOSERS = ("judge", "artist")


@dataclass(frozen=True, eq=False)
class Image:
    """An RGB preview image, uint8 sRGB, H x W x 3 (row 0 at the top)."""

    pixels: np.ndarray

    WIRE_PARTS = {"": (COLOR_DTYPE, 3)}

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"": self.pixels}

    @classmethod
    def from_wire(cls, parts: dict[str, np.ndarray]) -> "Image":
        return cls(parts[""])

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray):
            raise BadBuffer(f"preview must be a numpy array, got {type(p).__name__}")
        if p.dtype != COLOR_DTYPE:
            raise BadDtype(f"preview must be uint8, got {p.dtype.name}")
        if p.ndim != 3 or p.shape[2] != 3 or not (0 < p.shape[0] <= MAX_PREVIEW_SIDE) \
                or not (0 < p.shape[1] <= MAX_PREVIEW_SIDE):
            raise BadBuffer(f"preview must have shape (H, W, 3) with 1 <= H, W <= {MAX_PREVIEW_SIDE}, "
                            f"got {tuple(p.shape)}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and np.array_equal(self.pixels, other.pixels)


@dataclass(frozen=True, kw_only=True)
class JobInfo:
    """One job as `status_reply` and `list_reply` describe it."""

    job_id: str = wire(pattern=ID_PATTERN)
    state: JobState = wire(choices=JOB_STATES)
    prompt: str = wire(max_len=500)
    step: int = wire(0, minimum=0, maximum=MAX_STEP)
    steps: int = wire(0, minimum=0, maximum=MAX_STEP)
    loss: float | None = wire(None)
    elapsed: float = wire(0.0, minimum=0.0, maximum=MAX_SECONDS)
    created: float = wire(0.0, minimum=0.0)
    reason: str = wire("")
    #: The job this one continues (`init = checkpoint` from a job id): its lineage, one step back.
    parent: str | None = wire(None, pattern=ID_PATTERN)
    #: Where it runs or last ran (a Ray gateway's node: "host (node id)"); None on a plain server.
    node: str | None = wire(None, max_len=200)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every message. Any message may carry a `request_id`; replies echo it."""

    TYPE: ClassVar[str] = ""
    SENDER: ClassVar[str] = BOTH

    request_id: str | None = wire(None, pattern=ID_PATTERN)

    def __post_init__(self) -> None:
        check_fields(self, skip=buffer_fields(type(self)))
        for name in buffer_fields(type(self)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, BUFFER_CLASSES):
                raise BadBuffer(f"{name} must be a {buffer_class(type(self), name).__name__}")


# --- client -> server ---------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    TYPE = "hello"
    SENDER = CLIENT
    client: str = wire("", max_len=200)
    protocol: int = wire(PROTOCOL_VERSION, minimum=1, maximum=1_000_000)


@dataclass(frozen=True, kw_only=True)
class Submit(Message):
    TYPE = "submit"
    SENDER = CLIENT
    spec: JobSpec
    #: The start mesh of `init = "mesh"` (then `init_from` is empty), in the client's frame (Blender's world
    #: frame, Z up, metres); 1 to MAX_INIT_TRIANGLES triangles with some extent (`check_init_mesh`).
    init_mesh: MeshData | None = None
    #: The start mesh's own UVs, one per triangle corner: with `lock_geometry` and a `texture_size`, the texture
    #: is baked into them instead of a new atlas.
    init_uvs: CornerUVs | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_uvs is not None:
            if self.init_mesh is None:
                raise BadBuffer("init_uvs travels only with init_mesh (they are its UVs)")
            if len(self.init_uvs.uvs) != 3 * self.init_mesh.triangle_count:
                raise BadBuffer(f"init_uvs has {len(self.init_uvs.uvs)} rows; init_mesh's "
                                f"{self.init_mesh.triangle_count} triangles need {3 * self.init_mesh.triangle_count}"
                                " (one per corner)")
        if self.init_mesh is not None:
            check_init_mesh(self.init_mesh)
            if self.spec.init != "mesh":
                raise BadBuffer(f"init_mesh travels only with spec.init = 'mesh', not {self.spec.init!r}")
            if self.spec.init_from:
                raise BadBuffer("init_mesh and spec.init_from both name a start mesh; send one of them")


@dataclass(frozen=True, kw_only=True)
class JobCommand(Message):
    """Base of the client's commands about one existing job; the server refuses unknown ids."""

    SENDER = CLIENT
    job_id: str = wire(pattern=ID_PATTERN)


@dataclass(frozen=True, kw_only=True)
class Cancel(JobCommand):
    TYPE = "cancel"


@dataclass(frozen=True, kw_only=True)
class Delete(JobCommand):
    """Removes a job and its files from the backend (a queued or running one is cancelled first)."""

    TYPE = "delete"


@dataclass(frozen=True, kw_only=True)
class Status(Message):
    """One job, or (`job_id` null) a page of the jobs this client may see, oldest first."""

    TYPE = "status"
    SENDER = CLIENT
    job_id: str | None = wire(None, pattern=ID_PATTERN)
    offset: int = wire(0, minimum=0, maximum=MAX_STEP)
    limit: int = wire(DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)


@dataclass(frozen=True, kw_only=True)
class List(Message):
    """A page of the jobs this client may see, oldest first; `next_offset` in the reply asks for the next."""

    TYPE = "list"
    SENDER = CLIENT
    offset: int = wire(0, minimum=0, maximum=MAX_STEP)
    limit: int = wire(DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)


@dataclass(frozen=True, kw_only=True)
class Result(JobCommand):
    """Asks for a finished job's final mesh; the answer is its `finished` message, sent again."""

    TYPE = "result"


@dataclass(frozen=True, kw_only=True)
class Resume(JobCommand):
    """Continues an interrupted (or cancelled, or failed) job from its last checkpoint."""

    TYPE = "resume"


@dataclass(frozen=True, kw_only=True)
class Watch(JobCommand):
    """Subscribes to a job's events (another client's too, where the server shares jobs); answered by
    `status_reply`."""

    TYPE = "watch"


@dataclass(frozen=True, kw_only=True)
class Pick(JobCommand):
    """Best of N: the artist's choice of candidate for a running job of this client, before the judge's choice;
    answered by `chosen` (to every watcher) once the job takes it, or `rejected`."""

    TYPE = "pick"
    candidate: int = wire(minimum=0, maximum=MAX_CANDIDATES - 1)


@dataclass(frozen=True, kw_only=True)
class Ack(Message):
    """The client has taken the mesh of `job_id` at `step` (an `update`, or a `finished`): grants the next one."""

    TYPE = "ack"
    SENDER = CLIENT
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(minimum=0, maximum=MAX_STEP)


@dataclass(frozen=True, kw_only=True)
class Bye(Message):
    TYPE = "bye"
    SENDER = CLIENT


# --- either way -------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    TYPE = "heartbeat"
    SENDER = BOTH
    #: Sender's clock (seconds since the epoch); informative only.
    time: float = wire(0.0, minimum=0.0)


# --- server -> client ---------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    TYPE = "welcome"
    SENDER = SERVER
    server: str = wire("", max_len=200)
    protocol: int = wire(PROTOCOL_VERSION, minimum=1, maximum=1_000_000)
    heartbeat_interval: float = wire(5.0, minimum=0.0, maximum=3600.0)
    max_message_bytes: int = wire(256 * 2**20, minimum=0)
    #: Jobs one client may usefully keep queued or running here at once (a batch submits up to this many): the
    #: number of workers of a plain server; a Ray gateway's per-client queue limit. 1 from servers before it.
    job_slots: int = wire(1, minimum=1, maximum=1_000_000)


@dataclass(frozen=True, kw_only=True)
class Accepted(Message):
    TYPE = "accepted"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    #: The spec as the server will run it (seed resolved).
    spec: JobSpec


@dataclass(frozen=True, kw_only=True)
class Rejected(Message):
    TYPE = "rejected"
    SENDER = SERVER
    reason: str = wire()
    #: The JobSpec field (or "job_id") at fault, when one is.
    field: str | None = wire(None, max_len=200)
    #: The job a refused cancel / result / resume / watch was about.
    job_id: str | None = wire(None, pattern=ID_PATTERN)


@dataclass(frozen=True, kw_only=True)
class Progress(Message):
    TYPE = "progress"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(minimum=0, maximum=MAX_STEP)
    steps: int = wire(minimum=0, maximum=MAX_STEP)
    loss: float | None = wire(None)
    it_per_s: float = wire(0.0, minimum=0.0)
    eta: float | None = wire(None, minimum=0.0)
    elapsed: float = wire(0.0, minimum=0.0, maximum=MAX_SECONDS)
    phase: str = wire("training", choices=JOB_PHASES)
    #: In phase "queued": the job's place in the backend's line (1 runs next); 0 otherwise.
    queue_position: int = wire(0, minimum=0, maximum=MAX_STEP)


@dataclass(frozen=True, kw_only=True)
class Update(Message):
    TYPE = "update"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(minimum=0, maximum=MAX_STEP)
    steps: int = wire(minimum=0, maximum=MAX_STEP)
    loss: float | None = wire(None)
    elapsed: float = wire(0.0, minimum=0.0, maximum=MAX_SECONDS)
    #: The whole mesh, or (a job with `lock_geometry` whose mesh the client already has: the start mesh it
    #: sent, or an earlier update's) only its new `vertex_colors`. Exactly one of the two.
    mesh: MeshData | None = None
    vertex_colors: VertexColors | None = None
    preview: Image | None = None
    #: Best of N, before the choice: which candidate's mesh this is (0 ...), and its seed; None: the job's own.
    candidate: int | None = wire(None, minimum=0, maximum=MAX_CANDIDATES - 1)
    seed: int | None = wire(None, minimum=0, maximum=SEED_MAX)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.candidate is None) != (self.seed is None):
            raise BadField(str(SpecError("seed", self.seed, "a seed exactly when candidate is set",
                                         "does not match candidate")))
        if (self.mesh is None) == (self.vertex_colors is None):
            raise BadBuffer("update needs exactly one of mesh (positions, triangles, colors) and vertex_colors")


def describe_choice(seeds, scores, candidate: int, by: str) -> str:
    """A best-of-N choice in one line for a terminal: every candidate's seed and score, the chosen one marked."""
    rows = ", ".join(f"{'*' if i == candidate else ''}seed {seed} score {score:+.3f}"
                     for i, (seed, score) in enumerate(zip(seeds, scores)))
    return f"best of {len(seeds)}: candidate {candidate} (seed {seeds[candidate]}) chosen by the {by} ({rows})"


@dataclass(frozen=True, kw_only=True)
class Chosen(Message):
    """Best of N: the candidate that goes on (its updates are the job's from here on; the others have stopped),
    chosen by the prior's judge or picked by the artist (`pick`), with every candidate's seed and judged score."""

    TYPE = "chosen"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(minimum=0, maximum=MAX_STEP)
    candidate: int = wire(minimum=0, maximum=MAX_CANDIDATES - 1)
    by: str = wire(choices=CHOOSERS)
    seeds: list[int] = wire(minimum=0, maximum=SEED_MAX, max_items=MAX_CANDIDATES)
    #: The judge's scores (higher is better; positive: the prompt explains the candidate's renders best).
    scores: list[float] = wire(max_items=MAX_CANDIDATES)

    def describe(self) -> str:
        return describe_choice(self.seeds, self.scores, self.candidate, self.by)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (len(self.seeds) == len(self.scores) > self.candidate):
            raise BadField(str(SpecError("scores", self.scores, f"one score per seed, for at least "
                                         f"{self.candidate + 1} candidates", "does not match seeds")))


@dataclass(frozen=True, kw_only=True)
class Finished(Message):
    TYPE = "finished"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(minimum=0, maximum=MAX_STEP)
    elapsed: float = wire(0.0, minimum=0.0, maximum=MAX_SECONDS)
    #: Where the backend keeps the checkpoint (a path on the backend's machine).
    checkpoint: str = wire("")
    #: Exported files by kind, e.g. {"glb": "/data/jobs/ab12/result.glb"}.
    files: dict[str, str] = wire({}, max_items=64)
    mesh: MeshData
    #: The mesh's UVs and baked albedo image, when the spec asked for a texture (`texture_size` > 0).
    texture: Texture | None = None
    preview: Image | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.texture is not None:
            self.texture.check_fits(self.mesh)


@dataclass(frozen=True, kw_only=True)
class Failed(Message):
    TYPE = "failed"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    reason: str = wire()


@dataclass(frozen=True, kw_only=True)
class Cancelled(Message):
    TYPE = "cancelled"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    step: int = wire(0, minimum=0, maximum=MAX_STEP)


@dataclass(frozen=True, kw_only=True)
class Error(Message):
    """The reply to a message that could not be decoded or is not allowed."""

    TYPE = "error"
    SENDER = SERVER
    #: A ProtocolError code such as "bad_tag" or "length_mismatch".
    code: str = wire(max_len=64)
    reason: str = wire()

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> "Error":
        """The reply to a message that raised `exc`, echoing its request id."""
        return cls(code=exc.code, reason=safe_text(str(exc), MAX_TEXT), request_id=exc.request_id)


@dataclass(frozen=True, kw_only=True)
class Deleted(Message):
    """A `delete` done: the job and its folder are gone."""

    TYPE = "deleted"
    SENDER = SERVER
    job_id: str = wire(pattern=ID_PATTERN)
    #: Bytes of disk the job's files took.
    freed_bytes: int = wire(0, minimum=0)


@dataclass(frozen=True, kw_only=True)
class StatusReply(Message):
    """One job (`status {job_id}`, `watch`), or a page of them (`status {}`: see `list_reply`)."""

    TYPE = "status_reply"
    SENDER = SERVER
    jobs: list[JobInfo] = wire([])
    #: Jobs this client may see in all; the page starts at `offset`.
    total: int = wire(0, minimum=0)
    offset: int = wire(0, minimum=0)
    #: The `offset` of the next page, or null on the last page.
    next_offset: int | None = wire(None, minimum=0)


@dataclass(frozen=True, kw_only=True)
class ListReply(Message):
    """A page of jobs. Summaries cut prompts and reasons to a few hundred characters, so a page always fits."""

    TYPE = "list_reply"
    SENDER = SERVER
    jobs: list[JobInfo] = wire([])
    total: int = wire(0, minimum=0)
    offset: int = wire(0, minimum=0)
    next_offset: int | None = wire(None, minimum=0)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Hello, Submit, Cancel, Status, List, Result, Resume, Watch, Delete, Pick, Ack, Bye, Heartbeat,
                Welcome, Accepted, Rejected, Progress, Update, Chosen, Finished, Failed, Cancelled, Deleted, Error,
                StatusReply, ListReply)
}
CLIENT_TYPES = frozenset(t for t, c in MESSAGE_TYPES.items() if c.SENDER in (CLIENT, BOTH))
SERVER_TYPES = frozenset(t for t, c in MESSAGE_TYPES.items() if c.SENDER in (SERVER, BOTH))


def buffer_fields(cls: type[Message]) -> frozenset[str]:
    """Names of the fields that travel as buffers (MeshData / Image)."""
    return _BUFFER_FIELDS.setdefault(cls, frozenset(
        f.name for f in dataclasses.fields(cls) if _buffer_type(f.type) is not None))


def buffer_class(cls: type[Message], name: str) -> type:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _buffer_type(field.type)  # type: ignore[return-value]


_BUFFER_FIELDS: dict[type, frozenset[str]] = {}
#: What a buffer field may hold; each says how it travels (`WIRE_PARTS`, `wire_arrays`, `from_wire`).
BUFFER_CLASSES = (MeshData, VertexColors, CornerUVs, Texture, Image)


def _buffer_type(annotation: object) -> type | None:
    # Annotations are strings (from __future__ import annotations); match by name.
    text = str(annotation)
    if "CornerUVs" in text:
        return CornerUVs
    if "Texture" in text:
        return Texture
    if "VertexColors" in text:
        return VertexColors
    if "MeshData" in text:
        return MeshData
    if "Image" in text:
        return Image
    return None
