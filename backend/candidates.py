"""Best of N: several candidates of one job train side by side from different seeds; at `select_at` of the steps the
prior judges them (or the artist picks one) and the chosen one trains on alone.

- `candidate_seeds`: the seeds, the job's own first (best of 1 is the single run; candidate 0 of best of N too).
- `start_candidates`: the trainers, the first started as a single run is, the others from it (a start mesh is
  fitted once).
- `train_candidates`: the interleaved steps up to the choice, each candidate's stream, and the choice.
- `choose` and `judge_candidate`: the prior's own judgement (`Guidance.judge`: the denoising error of renders
  from fixed views under the prompt against its alternatives), with a sanity check: an empty or exploded
  candidate loses.

On a CPU the candidates take their steps in turn, each with its own draws and its own prior evaluation, so a
chosen candidate ends exactly where a single job of its seed would. On CUDA one round is one step of every
candidate with a single prior evaluation of all their renders in one batch (`batched_round`: one shading and one
noise draw per round, from the first candidate's generator), which a GPU runs in about the time of one.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.jobspec import SEED_MAX
from blender_dreamfusion.shared.messages import describe_choice

from .cameras import Cameras, make_cameras
from .geometry import Geometry
from .guidance import Guidance
from .renderer import RenderConfig, render as volume_render, sample_backgrounds
from .trainer import Snapshot, StepStats, Trainer, prompt_for_view, streams_at

#: Views the judge renders every candidate from: azimuths spread over the spec's range, at a low and a raised
#: elevation in turn (within the spec's range), at its middle distance and field of view.
JUDGE_VIEWS = 8
JUDGE_ELEVATIONS = (15.0, 40.0)
#: Judge renders are lit as the preview is: a light at the camera and this ambient share.
JUDGE_AMBIENT = 0.3
#: The share of a candidate's judge renders its object must cover, on average, to be judged at all: less is an
#: empty field (nothing grew), more an exploded one (it fills the frame). Such a candidate ranks below every other.
MIN_COVERAGE, MAX_COVERAGE = 0.005, 0.85
#: Seeds of candidates after the first step by this odd constant (the golden ratio's, 32 bits): far apart, and
#: the same for a job whatever its number of candidates.
SEED_STRIDE = 0x9E3779B1
#: The score of a candidate whose renders are not finite (a diverged field): below any judged one.
UNJUDGED = -1e6


def candidate_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a job's `count` candidates: its own first, then seeds derived from it."""
    return [(seed + i * SEED_STRIDE) % (SEED_MAX + 1) for i in range(count)]


@dataclass
class Candidate:
    index: int
    trainer: Trainer

    @property
    def seed(self) -> int:
        return self.trainer.spec.seed


@dataclass(frozen=True)
class Judgement:
    """A candidate's score: the mean over the judge's views of `Guidance.judge` (positive: the prompt explains its
    renders better than any alternative), and how much of the frame its object covers."""

    score: float
    coverage: float

    @property
    def sane(self) -> bool:
        return MIN_COVERAGE <= self.coverage <= MAX_COVERAGE

    def rank_key(self) -> tuple[bool, float]:
        return (self.sane, self.score)


@dataclass(frozen=True)
class Choice:
    """Which candidate goes on, and why: `by` is "judge" or "artist" (an artist's pick overrides the judge)."""

    index: int
    by: str
    seeds: tuple[int, ...]
    scores: tuple[float, ...]


def start_candidates(first: Trainer) -> list[Candidate]:
    """`first` (the job's own trainer, as `job_run.start_trainer` made it) and one more per extra candidate
    its spec asks for: a fresh start from a blob is a new trainer of the candidate's seed; any other start (a
    fitted start mesh, another job's checkpoint) is `first`'s copy with the candidate's seed for its draws."""
    spec = first.spec
    out = [Candidate(0, first)]
    for index, seed in enumerate(candidate_seeds(spec.seed, spec.candidates)[1:], start=1):
        if spec.init == "blob" and first.step == 0:
            trainer = Trainer(spec.replace(seed=seed), first.guidance, first.device, first.config)
        else:
            trainer = first.fork(seed)
        out.append(Candidate(index, trainer))
    return out


def train_candidates(candidates: list[Candidate], on_step: Callable[[StepStats], None] | None = None,
                     on_stream: Callable[[Candidate, Snapshot], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     picked: Callable[[], int | None] | None = None,
                     batched: bool | None = None) -> tuple[Choice, bool]:
    """Train every candidate to its spec's `select_step` (a step each in turn), then choose. `on_step` hears
    the first candidate's stats after each round; `on_stream` gets each candidate's mesh where the spec streams.
    `batched`: one prior evaluation per round for all (`batched_round`); by default on CUDA only.
    `picked()` is asked between rounds: an index the artist picked ends the round robin there and wins. Returns
    the Choice and whether `should_stop` stopped the round robin first (then the choice is made among the
    candidates as they are, so nothing learnt is lost)."""
    spec = candidates[0].trainer.spec
    end = spec.select_step(candidates[0].trainer.step)
    start = time.perf_counter()
    trainers = [c.trainer for c in candidates]
    if batched is None:
        batched = trainers[0].device.type == "cuda"
    stopped = False
    while candidates[0].trainer.step < end and _pick(picked, candidates) is None:
        if should_stop is not None and should_stop():
            stopped = True
            break
        stats = batched_round(trainers) if batched else [t.train_step() for t in trainers]
        if on_step is not None:
            on_step(stats[0])
        step = candidates[0].trainer.step
        if on_stream is not None and streams_at(step, spec.stream_every) and step < end:
            for candidate, stat in zip(candidates, stats):
                on_stream(candidate, candidate.trainer.snapshot(stat.loss, time.perf_counter() - start))
    return choose(candidates, _pick(picked, candidates)), stopped


def _pick(picked: Callable[[], int | None] | None, candidates: list[Candidate]) -> int | None:
    """The artist's pick, when there is one and it names a candidate (a server checks it; a stray one is not)."""
    pick = picked() if picked is not None else None
    return pick if isinstance(pick, int) and 0 <= pick < len(candidates) else None


def batched_round(trainers: list[Trainer]) -> list[StepStats]:
    """One step of every trainer with one prior evaluation: their renders (one shading for all) scored in one
    batch, each trainer's own losses added, one backward pass, every optimiser stepped. The batch's SDS loss is a
    sum over its images, so each candidate's gradient is what it would be alone with those draws."""
    first = trainers[0]
    spec = first.spec
    shading = first.draw_shading()
    plans = [t.begin_step(shading) for t in trainers]
    prompts = [p for plan in plans for p in plan.prompts]
    cameras = Cameras(*(torch.cat([getattr(plan.cameras, f) for plan in plans])
                        for f in Cameras.__dataclass_fields__))
    with plans[0].clock("guidance"):
        sds = first.guidance.sds(torch.cat([plan.out.rgb for plan in plans]), prompts,
                                 [spec.negative_prompt] * len(prompts), spec.guidance_scale, first.t_range(),
                                 first.generator, cameras, plans[0].perp_neg,
                                 torch.cat([plan.out.opacity.detach() for plan in plans]))
    own = [t.step_losses(plan) for t, plan in zip(trainers, plans)]
    for trainer in trainers:
        trainer.optimizer.zero_grad(set_to_none=True)
    with plans[0].clock("backward"):
        (sds.loss + sum(own)).backward()
    for trainer in trainers:
        trainer.optimizer.step()
        trainer.step += 1
    share = sds.value / len(trainers)  # the batch's score, shared out for reporting
    return [plan.stats(t.step, share + float(loss.detach()), share) for t, plan, loss in zip(trainers, plans, own)]


def choose(candidates: list[Candidate], pick: int | None = None) -> Choice:
    """Judge every candidate and choose: the artist's `pick` when given, else the best judged (a sane one first:
    `Judgement.rank_key`)."""
    seed = candidates[0].seed  # the job's: every candidate is judged with the same draws
    judged = [judge_candidate(c.trainer, seed) for c in candidates]
    seeds = tuple(c.seed for c in candidates)
    scores = tuple(j.score for j in judged)
    if pick is not None:
        return Choice(pick, "artist", seeds, scores)
    best = max(range(len(candidates)), key=lambda i: judged[i].rank_key())
    return Choice(candidates[best].index, "judge", seeds, scores)


def judge_views(spec: JobSpec):
    """The judge's fixed cameras for `spec` (`JUDGE_VIEWS`), lit from the camera."""
    low, high = spec.camera_azimuth
    full_turn = high - low >= 360.0
    count = JUDGE_VIEWS
    step = (high - low) / (count if full_turn else max(1, count - 1))
    first = 0.0 if full_turn else low  # the front (azimuth 0) among them when the whole turn is allowed
    azimuths = [first + step * i for i in range(count)]
    lo_el, hi_el = spec.camera_elevation
    elevations = [min(hi_el, max(lo_el, JUDGE_ELEVATIONS[i % 2])) for i in range(count)]
    radius = sum(spec.camera_radius) / 2
    fov = sum(spec.camera_fov) / 2
    return make_cameras(torch.tensor(azimuths), torch.tensor(elevations), radius, fov)


def judge_candidate(trainer: Trainer, seed: int) -> Judgement:
    """`trainer`'s geometry as it is now, judged by its prior under its spec (`judge_field`)."""
    trainer.set_progress()
    return judge_field(trainer.field, trainer.guidance, trainer.spec, seed, trainer.occupancy, trainer.config.render)


@torch.no_grad()
def judge_field(field, guidance: Guidance, spec: JobSpec, seed: int, occupancy=None,
                config: RenderConfig = RenderConfig()) -> Judgement:
    """A geometry (or any field the volume renderer takes, such as the toy's own objects) judged by `guidance`
    under `spec`'s prompt: renders from `judge_views`, with backgrounds and noise drawn from a generator of `seed`
    (the job's: every candidate is judged alike), each scored by `Guidance.judge` against the prior's
    `alternatives`, the unconditional prompt and the negative prompt."""
    device = guidance.device
    generator = torch.Generator().manual_seed(seed)
    cameras = judge_views(spec).to(device)
    background = sample_backgrounds(spec.background, len(cameras), generator).to(device)
    draw = field.render if isinstance(field, Geometry) else functools.partial(volume_render, field)
    out = draw(cameras, spec.render_resolution, shading="lambertian", ambient=JUDGE_AMBIENT, background=background,
               occupancy=occupancy, with_orientation=False, config=config)
    views = cameras.view_names()
    wordings = [spec.prompt, *guidance.alternatives(spec.prompt)]
    classes = [[guidance.condition_prompt(prompt_for_view(p, v) if spec.view_dependent else p, "lambertian")
                for v in views] for p in wordings]
    others = ["", spec.negative_prompt] if spec.negative_prompt.strip() else [""]
    classes += [[n] * len(views) for n in others]
    score, coverage = float(guidance.judge(out.rgb, classes, cameras, generator).mean()), float(out.opacity.mean())
    if not (math.isfinite(score) and math.isfinite(coverage)):  # a diverged field: it loses
        return Judgement(score=UNJUDGED, coverage=0.0)
    return Judgement(score=score, coverage=coverage)


def choice_line(choice: Choice) -> str:
    """The choice in one line, for a terminal (as a client prints a `chosen`)."""
    return describe_choice(choice.seeds, choice.scores, choice.index, choice.by)
