"""What a client shows about its jobs, folded from the backend's events. Pure Python: Blender's layer only draws it.

The add-on's timer (and the headless batch loop) feed every event from
`BackendClient.poll` into `JobTracker.apply`, which keeps one `JobView` per
job and hands back only the newest mesh per job from that batch: when
several updates queue up, applying the older ones to the scene would be
wasted main-thread time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..shared.jobspec import JobSpec
from ..shared.mesh import MeshData, Texture, VertexColors
from ..shared.messages import (Accepted, Cancelled, Chosen, Deleted, Error, Failed, Finished, JobInfo, ListReply,
                               Message, Progress, Rejected, StatusReply, Update)
from ..shared.states import ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, JobState, QUEUED, RUNNING, TERMINAL
from .refine import RefineTarget

#: A running job whose rate fell under this share of its best is said to be slowed by a busy machine.
SLOWED = 0.5


@dataclass
class JobView:
    job_id: str
    prompt: str
    state: JobState = QUEUED
    step: int = 0
    steps: int = 0
    loss: float | None = None
    it_per_s: float = 0.0
    #: The fastest recent rate this job has reported: a rate under half of it means the machine got busy.
    best_it_per_s: float = 0.0
    eta: float | None = None
    elapsed: float = 0.0
    reason: str = ""
    #: What the backend says the job is doing (JOB_PHASES), and its place in line while queued (0: not known).
    phase: str = ""
    queue_position: int = 0
    spec: JobSpec | None = None
    #: The job this one continues, as the backend's job rows say ("" for none, or not known yet).
    parent: str = ""
    #: Step of the newest mesh handed out for this job (-1: none yet).
    mesh_step: int = -1
    files: dict[str, str] = field(default_factory=dict)
    #: Best of N: the candidates streamed so far (index -> seed), and once one is chosen, which, by whom
    #: ("judge" or "artist") and every candidate's judged score.
    candidates: dict[int, int] = field(default_factory=dict)
    chosen: int | None = None
    chosen_by: str = ""
    scores: list[float] = field(default_factory=list)

    @property
    def choosing(self) -> bool:
        """Training candidates that the artist may still pick from."""
        return self.state in ACTIVE and bool(self.candidates) and self.chosen is None

    def candidate_text(self, index: int) -> str:
        """'candidate 2 · seed 1013904227' (and its score once judged)."""
        text = f"candidate {index} · seed {self.candidates.get(index, '?')}"
        if index < len(self.scores):
            text += f" · score {self.scores[index]:+.3f}"
        return text

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.steps) if self.steps else 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def phase_text(self) -> str:
        """What the job is doing, when it is not simply taking steps: 'queued · 2nd in line (backend busy)'."""
        if self.state == QUEUED:
            if self.queue_position > 1:
                return f"queued · {ordinal(self.queue_position)} in line (the backend is busy with other jobs)"
            return "queued · next in line" if self.queue_position == 1 else self.state
        if self.state != RUNNING:
            return ""
        return PHASE_TEXT.get(self.phase, "")

    def bar_text(self) -> str:
        """Short enough for a sidebar progress bar: '301/600 · ETA 1:52', or the phase when not training."""
        if self.state == QUEUED and self.queue_position:
            return f"queued · {ordinal(self.queue_position)} in line"
        if self.state == RUNNING and self.phase in PHASE_TEXT:
            return PHASE_TEXT[self.phase]
        text = f"{self.step}/{self.steps}" if self.steps else self.state
        if self.state == RUNNING and self.eta is not None:
            text += f" · ETA {format_seconds(self.eta)}"
        return text

    @property
    def slowed(self) -> bool:
        """Training, at under half of its own best rate: other work on the machine is taking its cores."""
        return self.state == RUNNING and 0 < self.it_per_s < SLOWED * self.best_it_per_s

    def busy_text(self) -> str:
        return f"machine busy: {self.it_per_s / self.best_it_per_s:.0%} of this job's best speed" if self.slowed else ""

    def detail_text(self) -> str:
        """The rest of the summary: '2.7 it/s · loss 1.75e+03' (and a busy machine said)."""
        parts = [f"{self.it_per_s:.1f} it/s"] if self.state == RUNNING and self.it_per_s > 0 else []
        if self.slowed:
            parts.append(self.busy_text())
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3g}")
        return " · ".join(parts)

    def summary(self) -> str:
        """One line for a progress bar: 'step 120/600 · 3.9 it/s · ETA 2:03 · loss 0.84'."""
        if self.phase_text():
            return self.phase_text()
        parts = [f"step {self.step}/{self.steps}" if self.steps else self.state]
        if self.state == RUNNING and self.it_per_s > 0:
            parts.append(f"{self.it_per_s:.1f} it/s")
        if self.state == RUNNING and self.eta is not None:
            parts.append(f"ETA {format_seconds(self.eta)}")
        if self.slowed:
            parts.append(self.busy_text())
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3g}")
        return " · ".join(parts)


@dataclass
class MeshToApply:
    """The newest mesh of a job: a whole `mesh`, or (an update of a job whose geometry is locked, whose mesh the
    client already has) only its `vertex_colors`. A final one always carries the whole mesh."""

    job_id: str
    step: int
    mesh: MeshData | None
    preview: object | None  # messages.Image
    final: bool
    vertex_colors: VertexColors | None = None
    #: A final mesh's UVs and baked albedo (the spec asked for a texture).
    texture: Texture | None = None


@dataclass
class CandidateMesh:
    """The newest mesh of one best-of-N candidate of a job, before the choice."""

    job_id: str
    candidate: int
    seed: int
    step: int
    mesh: MeshData


@dataclass
class Applied:
    """What one batch of events changed."""

    meshes: dict[str, MeshToApply] = field(default_factory=dict)
    #: (job id, candidate) -> its newest mesh in this batch.
    candidate_meshes: dict[tuple[str, int], CandidateMesh] = field(default_factory=dict)
    #: job id -> the choice made among its candidates (the scene drops the others' objects).
    chosen: dict[str, Chosen] = field(default_factory=dict)
    #: job id -> the request id of the submit (or resume) it answers.
    accepted: dict[str, str] = field(default_factory=dict)
    #: request id -> why the backend refused that submit (or resume).
    rejected: dict[str, str] = field(default_factory=dict)
    #: request id -> what this client sent with it (where its job goes), for the submits answered here.
    answered: dict[str, Submitted] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    #: User-facing lines: refusals and errors that belong to no job view.
    notices: list[str] = field(default_factory=list)


@dataclass
class Submitted:
    """A submit sent and not yet answered, and where its job goes once the backend names it."""

    spec: JobSpec
    #: The scene whose Generate sent it (its job list gets the job); "" for the current one.
    scene_name: str = ""
    #: Where a refinement's result goes (its new object, frame and lineage).
    target: RefineTarget | None = None


class JobTracker:
    """What this client knows of every job and every submit in flight: the one source the panel, the scene's job
    list and the batch read."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}
        self._submits: dict[str, Submitted] = {}

    @property
    def submitting(self) -> int:
        """Submits sent and not yet answered."""
        return len(self._submits)

    def submitted(self, request_id: str, spec: JobSpec, scene_name: str = "",
                  target: RefineTarget | None = None) -> None:
        """Remember a submit until its `accepted` (or `rejected`) names the job (`Applied.answered`)."""
        self._submits[request_id] = Submitted(spec, scene_name, target)

    def follow(self, info: JobInfo) -> JobView:
        """Add or refresh a job from a status/list row (e.g. one found in a reopened .blend)."""
        view = self.jobs.get(info.job_id) or JobView(info.job_id, info.prompt)
        self.jobs[info.job_id] = view
        view.state, view.step, view.elapsed, view.loss = info.state, info.step, info.elapsed, info.loss
        view.steps = info.steps or view.steps
        view.reason = info.reason
        view.parent = info.parent or view.parent
        return view

    def connection_lost(self) -> set[str]:
        """The backend went quiet: what was queued or running is shown as interrupted until it answers again."""
        lost = {job_id for job_id, view in self.jobs.items() if view.state in ACTIVE}
        for job_id in lost:
            self.jobs[job_id].state = INTERRUPTED
            self.jobs[job_id].reason = "lost contact with the backend"
        return lost

    def _answered(self, request_id: str | None, out: Applied) -> None:
        submitted = self._submits.pop(request_id or "", None)
        if submitted is not None:
            out.answered[request_id] = submitted

    def apply(self, events: list[Message]) -> Applied:
        out = Applied()
        for event in events:
            job_id = getattr(event, "job_id", None)
            if isinstance(event, Accepted):
                self._answered(event.request_id, out)
                out.accepted[event.job_id] = event.request_id or ""
                view = self.jobs.setdefault(event.job_id, JobView(event.job_id, event.spec.prompt))
                view.spec, view.steps, view.prompt = event.spec, event.spec.steps, event.spec.prompt
                if view.state in (INTERRUPTED, *TERMINAL):  # a resume was accepted: it runs again
                    view.state, view.reason, view.phase = QUEUED, "", ""
            elif isinstance(event, Rejected):
                self._answered(event.request_id, out)
                where = f" ({event.field})" if event.field else ""
                out.notices.append(f"refused{where}: {event.reason}")
                out.rejected[event.request_id or ""] = event.reason
                if job_id and job_id in self.jobs:
                    self.jobs[job_id].reason = event.reason
            elif isinstance(event, Error):
                out.notices.append(f"backend error {event.code}: {event.reason}")
            elif isinstance(event, Deleted):
                self.jobs.pop(event.job_id, None)
                out.notices.append(f"deleted job {event.job_id} on the backend ({event.freed_bytes / 2**20:.1f} MiB "
                                   "freed)")
                continue
            elif isinstance(event, (StatusReply, ListReply)):
                for info in event.jobs:
                    if info.job_id in self.jobs:
                        self.follow(info)
                        out.changed.add(info.job_id)
                continue
            elif isinstance(event, (Progress, Update)) and self._view(event.job_id).state in TERMINAL:
                continue  # a straggler behind the job's end must not bring it back to life
            elif (isinstance(event, Progress) and event.phase == "queued"
                  and self._view(event.job_id).state == RUNNING):
                continue  # a place in line announced just as a worker took the job: it runs already
            elif isinstance(event, Progress):
                view = self._view(event.job_id)
                view.phase, view.queue_position = event.phase, event.queue_position
                view.state = QUEUED if event.phase == "queued" else RUNNING
                view.step, view.steps, view.elapsed = event.step, event.steps, event.elapsed
                if event.phase == "training":  # the other phases carry no rate
                    view.loss, view.it_per_s, view.eta = event.loss, event.it_per_s, event.eta
                    view.best_it_per_s = max(view.best_it_per_s, event.it_per_s)
            elif isinstance(event, Update) and event.candidate is not None:
                view = self._view(event.job_id)
                if view.chosen is not None:
                    continue  # a candidate's straggler behind the choice
                view.state, view.step, view.steps = RUNNING, max(view.step, event.step), event.steps
                view.phase, view.loss, view.elapsed = "training", event.loss, event.elapsed
                view.candidates[event.candidate] = event.seed
                key = (event.job_id, event.candidate)
                if event.mesh is not None and (key not in out.candidate_meshes
                                               or out.candidate_meshes[key].step <= event.step):
                    out.candidate_meshes[key] = CandidateMesh(event.job_id, event.candidate, event.seed, event.step,
                                                              event.mesh)
            elif isinstance(event, Chosen):
                view = self._view(event.job_id)
                view.chosen, view.chosen_by, view.scores = event.candidate, event.by, list(event.scores)
                view.candidates.update(enumerate(event.seeds))
                out.chosen[event.job_id] = event
                for key in [k for k in out.candidate_meshes if k[0] == event.job_id]:
                    del out.candidate_meshes[key]
            elif isinstance(event, Update):
                view = self._view(event.job_id)
                view.state, view.step, view.steps = RUNNING, max(view.step, event.step), event.steps
                view.phase = view.phase if view.phase == "extracting" else "training"
                view.loss, view.elapsed = event.loss, event.elapsed
                self._offer(out, MeshToApply(event.job_id, event.step, event.mesh, event.preview, final=False,
                                             vertex_colors=event.vertex_colors))
            elif isinstance(event, Finished):
                view = self._view(event.job_id)
                view.state, view.step, view.elapsed, view.eta = FINISHED, event.step, event.elapsed, 0.0
                view.phase, view.queue_position = "", 0
                view.files = dict(event.files)
                self._offer(out, MeshToApply(event.job_id, event.step, event.mesh, event.preview, final=True,
                                             texture=event.texture))
            elif isinstance(event, Failed):
                view = self._view(event.job_id)
                view.state, view.reason = FAILED, event.reason
            elif isinstance(event, Cancelled):
                view = self._view(event.job_id)
                view.state, view.step = CANCELLED, max(view.step, event.step)
            else:
                continue
            if job_id:
                out.changed.add(job_id)
        for job_id, item in out.meshes.items():
            self.jobs[job_id].mesh_step = item.step
        return out

    def _view(self, job_id: str) -> JobView:
        return self.jobs.setdefault(job_id, JobView(job_id, ""))

    def _offer(self, out: Applied, item: MeshToApply) -> None:
        current = out.meshes.get(item.job_id)
        if item.final:  # the final mesh (also when a `result` reply re-sends it) always wins
            out.meshes[item.job_id] = item
        elif current is not None:
            if not current.final and item.step >= current.step:
                out.meshes[item.job_id] = item
        elif item.step > self.jobs[item.job_id].mesh_step:  # older than what the scene shows: skip
            out.meshes[item.job_id] = item


#: Progress-bar text for the phases that take no steps.
PHASE_TEXT = {"loading_model": "loading the model…", "fitting_mesh": "fitting the start mesh…",
              "extracting": "extracting the final mesh…", "baking": "baking textures…"}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
