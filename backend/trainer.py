"""The SDS trainer: sample a view, render, score with the prior, regularise, step.

Every random draw goes through one `torch.Generator` seeded from the
JobSpec, so a run is reproducible on the CPU and a checkpoint (which stores
that generator) resumes to the very same result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass, field as dataclass_field
from typing import Callable

import numpy as np
import torch

from blender_dreamfusion.shared import Image, JobSpec, MeshData, Update
from blender_dreamfusion.shared.jobspec import EARLY_STREAMS
from blender_dreamfusion.shared.mesh import VertexColors

from .asset import Asset, finish_asset
from .cameras import VIEW_SUFFIXES, make_cameras, sample_cameras
from .extract import Extraction, extract_mesh, vertex_colors
from .geometry import Geometry, GeometryConfig, geometry_class, make_geometry
from .geometry.colour import ColourConfig, ColourField
from .geometry.locked import LockedGeometry
from .guidance import Guidance
from .guidance.perp_neg import PerpNeg
from .mesh_metrics import SurfaceSamples
from .mesh_start import MeshStartConfig, start_colour_field, start_geometry, start_samples, used_positions
from .occupancy import OccupancyGrid
from .renderer import SHADINGS, RenderConfig, sample_ambient, sample_backgrounds
from .scene_mapping import SceneMapping
from .work_budget import Stopped


PREVIEW_SIZE = 96
PREVIEW_AZIMUTH = -30.0
PREVIEW_ELEVATION = 20.0


@dataclass(frozen=True)
class TrainerConfig:
    """How the backend trains, beyond what a JobSpec says: occupancy upkeep, learning-rate split, sample
    culling, the renderer's settings and any geometry's config that is not the default one.

    Not on the wire: clients choose through the JobSpec; benches and tests choose through this."""

    occupancy_every: int = 16
    occupancy_resolution: int = 64
    network_lr_scale: float = 0.1
    #: Hidden-sample culling costs a no-grad pass; it pays only once surfaces are opaque. Re-test every
    #: `cull_probe_every` steps and keep it on while it removes at least `cull_min_share` of the samples.
    cull_probe_every: int = 16
    cull_min_share: float = 0.15
    render: RenderConfig = dataclass_field(default_factory=RenderConfig)
    #: Configs that replace a geometry's default one (each names its geometry); the JobSpec's `geometry`
    #: picks which geometry is built.
    geometries: tuple[GeometryConfig, ...] = ()
    #: Build this registered geometry instead of the one the JobSpec names: one no client may ask for (a
    #: test's, or a stage's of its own); a checkpoint of it comes back as it (`load_checkpoint`).
    geometry: str | None = None
    #: How a start mesh (init = mesh) is fitted.
    mesh_start: MeshStartConfig = dataclass_field(default_factory=MeshStartConfig)

    def geometry_config(self, name: str) -> GeometryConfig:
        for config in self.geometries:
            if config.geometry == name:
                return config
        return geometry_class(name).config_class()

    def with_geometry_config(self, config: GeometryConfig) -> "TrainerConfig":
        others = tuple(c for c in self.geometries if c.geometry != config.geometry)
        return dataclasses.replace(self, geometries=(*others, config))


@dataclass
class TrainerState:
    """What a run needs to go on exactly where it was: the trainer's `state_dict`, a checkpoint's contents."""

    field: dict[str, torch.Tensor]
    occupancy: dict[str, torch.Tensor]
    #: torch's optimiser state_dict ("state" and "param_groups").
    optimizer: dict
    rng: torch.Tensor
    step: int
    #: The steps the run was heading for (its spec's): a continuation's schedules go on from where they were.
    steps: int
    schedule_from: tuple[int, float] = (0, 0.0)
    cull_pays: bool = False
    mapping: SceneMapping = dataclass_field(default_factory=SceneMapping)
    fixed_mesh: MeshData | None = None
    fixed_uvs: np.ndarray | None = None
    #: A locked shape's colour field config (None: not locked).
    lock: ColourConfig | None = None


@dataclass
class StepPlan:
    """A step up to the prior's score (`Trainer.begin_step`): the render and what it is scored by."""

    out: object  # renderer.Render
    cameras: object  # cameras.Cameras
    shading: str
    prompts: list[str]
    perp_neg: PerpNeg | None
    times: dict[str, float]
    clock: "_Clock"

    def stats(self, step: int, loss: float, sds: float) -> "StepStats":
        return StepStats(step=step, loss=loss, sds=sds, shading=self.shading, timings_ms=self.times,
                         evaluated=self.out.evaluated)


@dataclass
class StepStats:
    step: int
    loss: float
    sds: float
    shading: str
    timings_ms: dict[str, float]
    evaluated: int


#: Geometries take their schedule's position as a step of this many (`Geometry.set_progress`), when a
#: continuation's schedule does not run from step 0.
SCHEDULE_STEPS = 1_000_000


def schedule_progress(schedule_from: tuple[int, float], step: int, steps: int) -> float:
    """How far through its schedules (sharpness, coarse to fine, noise annealing) a run is at `step` of `steps`,
    when its schedule started at `schedule_from` = (step, progress): from 0 at step 0 for a fresh job; a
    continuation starts where its parent's stopped (a finished parent: 1, its wall thin, every level in) and
    runs on to 1 at its own last step, so re-prompting never softens a finished shape again."""
    start_step, start = schedule_from
    if steps <= start_step:
        return min(1.0, start)
    return min(1.0, start + (1.0 - start) * max(0, step - start_step) / (steps - start_step))


def prompt_for_view(prompt: str, view: str) -> str:
    """DreamFusion's view-dependent prompting: 'a red cube' -> 'a red cube, front view'."""
    return f"{prompt}, {view} view"


class Trainer:
    def __init__(self, spec: JobSpec, guidance: Guidance, device: torch.device | str = "cpu",
                 config: TrainerConfig = TrainerConfig()):
        self.spec, self.guidance, self.config = spec, guidance, config
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(spec.seed)
        name = config.geometry or spec.geometry
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            self.field: Geometry = make_geometry(name, config.geometry_config(name),
                                                 spec.render_resolution).to(self.device)
        #: (step, progress) where this run's schedules start: (0, 0) unless it continues another job's checkpoint.
        self.schedule_from: tuple[int, float] = (0, 0.0)
        self.field.set_progress(0, spec.steps)
        self.occupancy = OccupancyGrid(self.field.bound, config.occupancy_resolution).to(self.device)
        self.optimizer = self._new_optimizer()
        #: Where the scene sits in the artist's world (a start mesh's framing; the identity otherwise).
        self.mapping = SceneMapping()
        #: init = mesh with lock_geometry: the artist's mesh (world frame), which every result is, recoloured.
        self.fixed_mesh: MeshData | None = None
        #: Its own UVs, one per triangle corner, when it came with them: a texture is baked into them.
        self.fixed_uvs: np.ndarray | None = None
        self.step = 0
        self._cull_pays = False
        self._shading_p = self._shading_probabilities()

    def _shading_probabilities(self) -> torch.Tensor:
        probabilities = self.spec.shading_probabilities()
        if self.locked:  # a textureless render of a frozen shape has nothing to teach the colour
            probabilities["textureless"] = 0.0
            if probabilities["albedo"] + probabilities["lambertian"] <= 0.0:
                probabilities["albedo"] = 1.0
        return torch.tensor([probabilities[s] for s in SHADINGS])

    def _new_optimizer(self) -> torch.optim.Adam:
        lr = self.spec.learning_rate
        return _adam([
            {"params": self.field.grid_parameters(), "lr": lr, "eps": 1e-15},
            {"params": self.field.network_parameters(), "lr": lr * self.config.network_lr_scale, "eps": 1e-15},
        ])

    def fork(self, seed: int) -> "Trainer":
        """A copy of this trainer (geometry, optimiser state, step, start mesh) whose draws come from `seed` from
        here on: a best-of-N candidate started as this one was, without fitting its start mesh again."""
        twin = copy.deepcopy(self, memo={id(self.guidance): self.guidance})
        twin.spec = self.spec.replace(seed=seed)
        twin.generator = torch.Generator().manual_seed(seed)
        return twin

    # --- refinement: a start mesh, a locked shape ------------------------------------

    @property
    def locked(self) -> bool:
        return isinstance(self.field, LockedGeometry)

    def start_from_mesh(self, mesh: MeshData, uvs: np.ndarray | None = None,
                        should_stop: Callable[[], bool] | None = None) -> None:
        """init = mesh: frame `mesh` (world frame) in the scene and start the geometry as its shape and colours;
        with lock_geometry freeze that shape (then every result is `mesh` itself, recoloured, and a texture is
        baked into `uvs`, its own per-corner UVs, when it has them). `should_stop` is asked during the fit."""
        spec, settings = self.spec, self.config.mesh_start
        self.mapping = SceneMapping.framing(used_positions(mesh))
        # One set of surface samples colours the start geometry and, when locked, its own colour field.
        samples = start_samples(self.mapping.to_scene(mesh.positions), mesh.triangles, mesh.colors, settings,
                                spec.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            field = start_geometry(spec.geometry, self.config.geometry_config(spec.geometry), spec.render_resolution,
                                   mesh, self.mapping, settings, samples, locked=spec.lock_geometry,
                                   should_stop=should_stop).to(self.device)
            colour = start_colour_field(field.bound, samples, settings) if spec.lock_geometry else None
        self.field = field
        if colour is not None:
            self.fixed_mesh = MeshData(np.array(mesh.positions), np.array(mesh.triangles), np.array(mesh.colors))
            if uvs is not None and len(uvs) == 3 * mesh.triangle_count:
                self.fixed_uvs = np.array(uvs, np.float32)
            self._lock(colour)
        else:
            self.optimizer = self._new_optimizer()
        self.set_progress()

    def lock_geometry(self) -> None:
        """Freeze the current shape (a checkpoint's) and give it its own colour field, starting as its colours."""
        if self.locked:
            return
        shape, settings = self.field, self.config.mesh_start
        shape.set_progress(1, 1)
        surface = extract_mesh(shape, self.spec.mesh_resolution, self.occupancy).mesh
        if not surface.triangle_count:
            raise ValueError("lock_geometry: the checkpoint has no surface yet to lock; continue it unlocked first")
        samples = start_samples(surface.positions, surface.triangles, surface.colors, settings, self.spec.seed)
        with torch.no_grad():  # the shape's own albedo where the samples are, not the mesh's vertex colours
            points = torch.as_tensor(samples.points, dtype=torch.float32, device=self.device)
            colours = torch.cat([shape.albedo(p) for p in points.split(65536)]).cpu().numpy()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.spec.seed)
            colour = start_colour_field(shape.bound, SurfaceSamples(samples.points, colours, samples.normals),
                                        settings)
        self._lock(colour)

    def _lock(self, colour: ColourField) -> None:
        """From here on the shape is frozen and only `colour` learns: a new optimiser for its parameters, and a
        shading mix without textureless renders (`_shading_probabilities`)."""
        self.field = LockedGeometry(self.field, colour.to(self.device))
        self.optimizer = self._new_optimizer()
        self._shading_p = self._shading_probabilities()

    # --- a checkpoint's contents -------------------------------------------------------

    def state_dict(self) -> TrainerState:
        """Everything this run needs to go on exactly where it is (`checkpoint.py` writes it as a file)."""
        return TrainerState(
            field=self.field.state_dict(), occupancy=self.occupancy.state_dict(),
            optimizer=self.optimizer.state_dict(), rng=self.generator.get_state(), step=self.step,
            steps=self.spec.steps, schedule_from=self.schedule_from, cull_pays=self._cull_pays,
            mapping=self.mapping, fixed_mesh=self.fixed_mesh, fixed_uvs=self.fixed_uvs,
            lock=self.field.colour.config if isinstance(self.field, LockedGeometry) else None)

    def load_state_dict(self, state: TrainerState, resume: bool = True) -> None:
        """Go on from `state` with this trainer's spec. A locked state locks this trainer (a locked shape stays
        locked). `resume`: the same job carrying on (the very same draws and schedules follow); False for a new
        job continuing it, which draws from its own seed and runs its schedules on from where the state's
        stopped (`schedule_progress`). This trainer's learning rate wins (a continuation may ask for another)."""
        if state.lock is not None and not self.locked:
            self._lock(ColourField(state.lock))
        self.field.load_state_dict(state.field)
        self.occupancy.load_state_dict(state.occupancy)
        optimizer = dict(state.optimizer)
        optimizer["param_groups"] = [{**saved, "lr": current["lr"]} for saved, current in
                                     zip(optimizer["param_groups"], self.optimizer.param_groups)]
        self.optimizer.load_state_dict(optimizer)
        if resume:
            self.generator.set_state(state.rng)
        self.mapping, self.fixed_mesh, self.fixed_uvs = state.mapping, state.fixed_mesh, state.fixed_uvs
        self.step = state.step
        if resume:
            self.schedule_from = state.schedule_from
        else:
            self.schedule_from = (self.step, schedule_progress(state.schedule_from, self.step, state.steps))
        self.set_progress()  # a mesh or preview before the next step
        self._cull_pays = state.cull_pays

    # --- one step ---------------------------------------------------------------

    def train_step(self) -> StepStats:
        plan = self.begin_step()
        spec = self.spec
        with plan.clock("guidance"):
            sds = self.guidance.sds(plan.out.rgb, plan.prompts, [spec.negative_prompt] * len(plan.prompts),
                                    spec.guidance_scale, self.t_range(), self.generator, plan.cameras, plan.perp_neg,
                                    plan.out.opacity.detach())
        loss = sds.loss + self.step_losses(plan)
        with plan.clock("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with plan.clock("optimiser"):
            self.optimizer.step()
        self.step += 1
        return plan.stats(self.step, float(loss.detach()), sds.value)

    def begin_step(self, shading: str | None = None) -> "StepPlan":
        """A step up to the prior's score: occupancy upkeep, cameras, light and shading drawn, the render, and
        the prompts to score it by. `shading`: one chosen for several trainers at once (best of N on one batch,
        candidates.py); drawn from this run's generator otherwise."""
        spec, cfg, gen = self.spec, self.config, self.generator
        times: dict[str, float] = {}
        clock = _Clock(self.device, times)
        self.set_progress()
        if self.step % cfg.occupancy_every == 0:
            with clock("occupancy"):
                self.field.update_occupancy(self.occupancy, gen)
        v = spec.views_per_step
        cameras = sample_cameras(spec, v, gen).to(self.device)
        if shading is None:
            shading = self.draw_shading()
        ambient = sample_ambient(spec.ambient, v, gen).to(self.device)
        background = sample_backgrounds(spec.background, v, gen).to(self.device)
        probe = self.step % cfg.cull_probe_every == 0
        render_config = dataclasses.replace(cfg.render, cull_hidden=cfg.render.cull_hidden and
                                            (probe or self._cull_pays))
        with clock("render"):
            out = self.field.render(cameras, spec.render_resolution, shading=shading, ambient=ambient,
                         background=background, occupancy=self.occupancy, generator=gen,
                         with_orientation=spec.orientation_weight > 0, config=render_config)
        if probe:
            self._cull_pays = out.culled >= cfg.cull_min_share * max(1, out.culled + out.evaluated)
        prompts = [self.guidance.condition_prompt(
            prompt_for_view(spec.prompt, view) if spec.view_dependent else spec.prompt, shading)
            for view in cameras.view_names()]
        perp_neg = None
        if spec.perp_neg > 0:
            perp_neg = PerpNeg(spec.perp_neg, {view: self.guidance.condition_prompt(
                prompt_for_view(spec.prompt, view), shading) for view in VIEW_SUFFIXES})
        return StepPlan(out, cameras, shading, prompts, perp_neg, times, clock)

    def draw_shading(self) -> str:
        """A shading for the next step's render, by the spec's mix (a locked shape's without textureless)."""
        return SHADINGS[int(torch.multinomial(self._shading_p, 1, generator=self.generator))]

    def step_losses(self, plan: "StepPlan") -> torch.Tensor:
        """The step's losses beside SDS: orientation, opacity, entropy, and the geometry's own."""
        spec, out = self.spec, plan.out
        opacity = out.opacity.clamp(1e-5, 1.0 - 1e-5)
        entropy = -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean()
        loss = (spec.orientation_weight * out.orientation + spec.opacity_weight * out.opacity.mean()
                + spec.entropy_weight * entropy)
        for value in self.field.losses(out.surface_points, self.generator, self.field.loss_weights(spec)).values():
            loss = loss + value
        return loss

    def progress(self) -> float:
        """How far through its schedules the run is (`schedule_progress`)."""
        return schedule_progress(self.schedule_from, self.step, self.spec.steps)

    def set_progress(self) -> None:
        """Tell the geometry where its schedules are, before a step (or a mesh taken between steps)."""
        if self.schedule_from == (0, 0.0):
            self.field.set_progress(self.step, self.spec.steps)
        else:
            self.field.set_progress(self.progress() * SCHEDULE_STEPS, SCHEDULE_STEPS)

    def t_range(self) -> tuple[float, float]:
        """The noise-level range for this step: t_range, its top annealed down by `t_anneal` over the run."""
        low, high = self.spec.t_range
        return low, high - self.spec.t_anneal * self.progress() * (high - low)

    # --- the whole run -------------------------------------------------------------

    def run(self, on_step: Callable[[StepStats], None] | None = None,
            on_stream: Callable[[Snapshot], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> bool:
        """Train up to `spec.steps`. `on_stream` gets a mesh snapshot where `streams_at` says.

        Returns False when `should_stop` asked to stop early (checked before every step).
        """
        start = time.perf_counter()
        while self.step < self.spec.steps:
            if should_stop is not None and should_stop():
                return False
            stats = self.train_step()
            if on_step is not None:
                on_step(stats)
            if on_stream is not None and streams_at(self.step, self.spec.stream_every) and \
                    self.step < self.spec.steps:
                on_stream(self.snapshot(stats.loss, time.perf_counter() - start))
        return True

    # --- what the artist sees -------------------------------------------------------

    def snapshot(self, loss: float | None = None, elapsed: float = 0.0, preview: bool = True) -> "Snapshot":
        """The current mesh (at the spec's mesh resolution) in the artist's world frame, and a small preview render.

        With a locked start mesh the mesh is that mesh, recoloured: nothing is extracted."""
        fixed = self.fixed_mesh
        if fixed is not None:
            colours = vertex_colors(self.field, self.mapping.to_scene(fixed.positions))
            extraction = Extraction(MeshData(fixed.positions, fixed.triangles, colours), 0.0, "")
        else:
            extraction = extract_mesh(self.field, self.spec.mesh_resolution, self.occupancy)
            mesh = extraction.mesh
            if not self.mapping.is_identity and mesh.vertex_count:
                extraction.mesh = MeshData(self.mapping.to_world(mesh.positions), mesh.triangles, mesh.colors)
        image = self.preview() if preview else None
        return Snapshot(step=self.step, steps=self.spec.steps, loss=loss, elapsed=elapsed, extraction=extraction,
                        preview=image, colours_only=fixed is not None)

    def albedo_at(self, positions: np.ndarray) -> np.ndarray:
        """The field's albedo at points in the artist's world frame, uint8 sRGB RGBA."""
        return vertex_colors(self.field, self.mapping.to_scene(np.asarray(positions, np.float64)))

    def final_asset(self, mesh: MeshData, should_stop: Callable[[], bool] | None = None) -> Asset:
        """The final mesh (`snapshot(...).extraction.mesh`) made into what the spec asks for: smoothed, decimated,
        UV-mapped and baked (backend/asset). A locked start mesh keeps its vertices, and its own UVs if it came
        with them. `should_stop` is asked during the bake: Stopped goes through to the caller."""
        try:
            return finish_asset(mesh, self.spec, self.albedo_at, keep_geometry=self.fixed_mesh is not None,
                                own_uvs=self.fixed_uvs, should_stop=should_stop)
        except Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - an unusable mesh for a library (xatlas, the simplifier)
            # The result is not lost for it: the raw mesh is, with vertex colours, and the reason says why.
            return Asset(mesh, None, notes=[f"post-processing failed ({type(exc).__name__}: {exc}); the result "
                                            "is the mesh as extracted, with vertex colours"])

    @torch.no_grad()
    def preview(self, resolution: int = PREVIEW_SIZE) -> np.ndarray:
        """A lambertian render from a fixed three-quarter front view, uint8 sRGB H x W x 3."""
        camera = make_cameras(PREVIEW_AZIMUTH, PREVIEW_ELEVATION, sum(self.spec.camera_radius) / 2,
                              sum(self.spec.camera_fov) / 2).to(self.device)
        camera.lights = camera.positions.clone()
        out = self.field.render(camera, resolution, shading="lambertian", ambient=0.3,
                     occupancy=self.occupancy, with_orientation=False, config=self.config.render)
        return (out.rgb[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def streams_at(step: int, every: int) -> bool:
    """Whether a run that streams every `every` steps (0: never) sends a mesh after `step`: each `every`-th step,
    and the EARLY_STREAMS below the first (a resumed run is past them)."""
    return bool(every) and (step % every == 0 or (step < every and step in EARLY_STREAMS))


@dataclass
class Snapshot:
    """What a stream update carries, before it gets a job id."""

    step: int
    steps: int
    loss: float | None
    elapsed: float
    extraction: Extraction
    preview: np.ndarray | None
    #: The mesh is the client's own start mesh, recoloured: an update need only carry its colours.
    colours_only: bool = False

    def as_update(self, job_id: str, candidate: int | None = None, seed: int | None = None) -> Update:
        """The update of `job_id` (of its `candidate` of that `seed`, before a best-of-N choice)."""
        image = Image(np.ascontiguousarray(self.preview)) if self.preview is not None else None
        loss = self.loss if self.loss is not None and np.isfinite(self.loss) else None
        mesh = self.extraction.mesh
        common = dict(job_id=job_id, step=self.step, steps=self.steps, loss=loss, elapsed=self.elapsed, preview=image,
                      candidate=candidate, seed=seed)
        if self.colours_only:
            return Update(**common, vertex_colors=VertexColors(mesh.colors))
        return Update(**common, mesh=mesh)


def _adam(groups: list[dict]) -> torch.optim.Adam:
    # The fused kernel updates the ~5 M grid parameters about 7x faster on a CPU than the default.
    try:
        return torch.optim.Adam(groups, betas=(0.9, 0.99), fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without a fused kernel
        return torch.optim.Adam(groups, betas=(0.9, 0.99))


class _Clock:
    """Wall time per phase in ms; synchronises CUDA so GPU work is charged to the right phase."""

    def __init__(self, device: torch.device, into: dict[str, float]):
        self.device, self.into = device, into

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.into[name] = self.into.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
