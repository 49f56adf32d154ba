"""The add-on's heartbeat: a `bpy.app.timers` function that drains backend events into the scene.

Each tick reads every pending event without waiting, applies only the newest
mesh per job, mirrors job states into the scene's job list and redraws the
sidebar. Headless batch runs call `tick()` themselves in their own loop
(timers never fire in `blender --background`).
"""

from __future__ import annotations

import atexit
import time

import bpy

from . import history, preferences, scene_update
from .addon_core.job_tracker import CandidateMesh
from .addon_core.refine import is_frame
from .addon_core.session import SESSION
from .addon_core.texture_queue import TextureQueue
from .properties import find_job

#: Seconds between ticks while jobs run / while idle.
ACTIVE_INTERVAL = 0.1
IDLE_INTERVAL = 0.5
#: Main-thread milliseconds per tick for applying meshes; at least one is applied per tick.
MESH_BUDGET_MS = 15.0

_deferred: dict = {}  # job id -> MeshToApply not applied yet (over the tick's budget)
_textures = TextureQueue()  # finished jobs' textures being encoded for packing

last_tick_ms = 0.0


_last_status = None  # what the panel's status line said at the last redraw


def tick() -> float:
    """One timer tick; returns the delay until the next (the `bpy.app.timers` contract)."""
    global last_tick_ms, _last_status
    started = time.perf_counter()
    had_deferred = bool(_deferred)
    applied = SESSION.tick()
    if applied is not None:
        _apply(applied)
    textured = _apply_textures()
    last_tick_ms = (time.perf_counter() - started) * 1000.0
    status = SESSION.status()
    # Redraw the sidebar only when something it shows changed: ten redraws a second cost a software-rendered
    # Blender (a VM, Xvfb) most of a core, which a local backend then lacks.
    if had_deferred or textured or status != _last_status or (applied is not None and (
            applied.changed or applied.meshes or applied.accepted or applied.rejected or applied.notices)):
        redraw_sidebar()
        _last_status = status
    busy = any(view.active for view in SESSION.tracker.jobs.values()) or SESSION.tracker.submitting or _deferred \
        or _textures.busy
    return ACTIVE_INTERVAL if busy or status.state in ("starting", "connecting") else IDLE_INTERVAL


def _apply(applied) -> None:
    tracker = SESSION.tracker
    for job_id, request_id in applied.accepted.items():
        submitted = applied.answered.get(request_id)
        scene_name, target = (submitted.scene_name, submitted.target) if submitted is not None else ("", None)
        scene, job_item = find_job(job_id)
        if job_item is None:
            scene = bpy.data.scenes.get(scene_name) or bpy.context.scene
            job_item = _add_job_item(scene, job_id, tracker.jobs[job_id].prompt)
            applied.changed.add(job_id)
        if target is not None:
            _adopt(job_item, job_id, target)
    for request_id in applied.rejected:
        submitted = applied.answered.get(request_id)
        target = submitted.target if submitted is not None else None
        if target is not None:  # the refusal itself is in the panel's notices
            scene_update.discard_pending(target.token, target.hidden_object)
    dropped, SESSION.dropped_targets = SESSION.dropped_targets, []
    for target in dropped:
        scene_update.discard_pending(target.token, target.hidden_object)
    _deferred.update(applied.meshes)  # newer meshes replace deferred ones of the same job
    _deferred.update(applied.candidate_meshes)  # ... and of the same candidate (keyed (job id, index))
    for job_id, choice in applied.chosen.items():  # before the job's own meshes, which follow the choice
        for key in [k for k in _deferred if isinstance(k, tuple) and k[0] == job_id]:
            del _deferred[key]
        _choose(tracker.jobs[job_id], choice)
    started = time.perf_counter()
    for job_id in list(_deferred):
        if (time.perf_counter() - started) * 1000.0 > MESH_BUDGET_MS:
            break  # the rest waits for the next tick: Blender stays responsive with many jobs streaming
        item = _deferred.pop(job_id)
        if isinstance(item, CandidateMesh):
            _write_candidate(tracker.jobs[item.job_id], item)
            continue
        view = tracker.jobs[job_id]
        scene, job_item = find_job(job_id)
        if scene is None:  # a job this Blender did not start (or whose scene was deleted): follow it here
            scene = bpy.context.scene
            job_item = _add_job_item(scene, job_id, view.prompt)
        obj = _write(scene, job_item, view, item)
        if obj is not None:
            job_item.object = obj  # the job list's pointer saves scanning every object in the file on each update
        if item.preview is not None:  # the job's thumbnail: what its Jobs row and the progress box show
            history.store_thumbnail(job_item, item.preview.pixels)
    for job_id in applied.changed:
        view = tracker.jobs.get(job_id)
        scene, job_item = find_job(job_id)
        if view is not None and job_item is not None:
            _show(view, job_item)


def _write_candidate(view, item) -> None:
    """A best-of-N candidate's mesh into its own object, in the row beside its job's place."""
    scene, job_item = find_job(item.job_id)
    if scene is None:
        scene = bpy.context.scene
        job_item = _add_job_item(scene, item.job_id, view.prompt)
    scene_update.apply_candidate_mesh(scene, item.job_id, view.prompt, item.candidate, item.seed, item.mesh,
                                      item.step, frame=_frame(job_item))


def _choose(view, choice) -> None:
    """The job chose a candidate: the others' objects go (or hide, as the preferences say) and the job's own
    object takes the chosen one's mesh at once (the job's next update replaces it)."""
    try:
        keep = preferences.get().keep_candidates
    except (KeyError, AttributeError):  # the add-on's preferences are not registered (a bare module test)
        keep = False
    mesh = scene_update.settle_candidates(view.job_id, choice.candidate, list(choice.scores), keep)
    scene, job_item = find_job(view.job_id)
    if mesh is None or job_item is None:
        return
    obj = scene_update.ensure_object(scene, view.job_id, view.prompt, job_item.object, frame=_frame(job_item))
    scene_update.take_mesh(obj, mesh)
    job_item.object = obj


def _show(view, job_item) -> None:
    """The tracker's view of a job (the one record of it) drawn into its entry in the scene's job list, which
    the file saves and the panel lists: the one place those fields are written from the backend's news."""
    job_item.state, job_item.step, job_item.steps = view.state, view.step, view.steps
    job_item.summary, job_item.reason = view.summary(), view.reason[:1024]
    job_item.elapsed = view.elapsed
    if not job_item.spec_json:
        history.record_spec(job_item, view.spec)
    if view.prompt:
        job_item.prompt = view.prompt
    if view.parent and not job_item.parent_job:
        job_item.parent_job = view.parent


def _apply_textures() -> bool:
    """Swap encoded textures into their jobs' objects; True if any was."""
    done = False
    for job_id, texture, png, error in _textures.ready():
        scene, job_item = find_job(job_id)
        obj = scene_update.job_object(job_id, job_item.object if job_item is not None else None)
        if png is None or obj is None:
            if error:
                print(f"DreamFusion: the texture of job {job_id} could not be encoded: {error}")
            continue
        done = scene_update.apply_texture(obj, job_id, texture.uvs, png) or done
    return done


def _adopt(job_item, job_id: str, target) -> None:
    """A refinement was accepted: its list entry learns its lineage and frame, and the object made when its
    button was pressed becomes the job's object (unless Undo took it away: then the first mesh makes one)."""
    job_item.parent_job, job_item.source_object = target.parent_job, target.source_object
    job_item.frame, job_item.keep_geometry = target.frame, target.keep_geometry
    obj = scene_update.claim_pending(target.token, job_id)
    if obj is not None:
        job_item.object = obj


def _write(scene, job_item, view, item):
    """Put one MeshToApply into the job's object; the object, or None when there was nothing to write.

    Colours alone (a locked job's update, or the final mesh of a job whose object holds the artist's own mesh)
    go into the albedo attribute only, when the object has exactly that many vertices; an update whose colours
    fit no object here is skipped (the final message carries the whole mesh)."""
    job_id = view.job_id
    colors = None
    if item.vertex_colors is not None:
        colors = item.vertex_colors.colors
    elif job_item.keep_geometry and item.mesh is not None and item.texture is None:
        colors = item.mesh.colors  # (a texture's UVs need the mesh written as it travelled, corner for corner)
    model, spec_json = (view.spec.model if view.spec else ""), scene_update.spec_json(view.spec)
    if colors is not None:
        obj = scene_update.job_object(job_id, job_item.object)
        if obj is not None and scene_update.apply_colors(obj, colors, item.step, model, spec_json):
            return obj
    if item.mesh is None or not item.mesh.vertex_count:
        return None
    properties = {key: value for key, value in ((scene_update.PARENT_PROPERTY, job_item.parent_job),
                                                (scene_update.SOURCE_PROPERTY, job_item.source_object)) if value}
    obj = scene_update.apply_mesh(scene, job_id, view.prompt, item.mesh, item.step, model, spec_json,
                                  known=job_item.object, frame=_frame(job_item), properties=properties)
    if item.texture is not None:
        _textures.submit(job_id, item.texture)  # the object shows vertex colours until a later tick swaps it in
    return obj


def _frame(job_item) -> tuple:
    """The job's frame: its object's (kept in double precision) where it has one, else its list entry's."""
    obj = job_item.object
    stored = obj.get(scene_update.FRAME_PROPERTY) if obj is not None else None
    if stored is not None and is_frame(stored):
        return tuple(float(v) for v in stored)
    return tuple(job_item.frame)


def _add_job_item(scene, job_id: str, prompt: str):
    item = scene.dreamfusion.jobs.add()
    item.job_id, item.prompt, item.created = job_id, prompt, time.time()
    history.record_spec(item, SESSION.tracker.jobs[job_id].spec if job_id in SESSION.tracker.jobs else None)
    return item


def redraw_sidebar() -> None:
    window_manager = bpy.context.window_manager
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def start() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=ACTIVE_INTERVAL, persistent=True)


def stop() -> None:
    _deferred.clear()
    _textures.shutdown()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def register() -> None:
    start()
    # Blender does not unregister add-ons when it quits; atexit still runs, and stops the backend we launched.
    atexit.register(SESSION.shutdown)


def unregister() -> None:
    stop()
    atexit.unregister(SESSION.shutdown)
    SESSION.shutdown()
