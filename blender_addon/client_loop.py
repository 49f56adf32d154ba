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
import numpy as np

from . import history, scene_update
from .session import SESSION

#: Seconds between ticks while jobs run / while idle.
ACTIVE_INTERVAL = 0.1
IDLE_INTERVAL = 0.5
PREVIEW_NAME = "dreamfusion_preview"
#: Main-thread milliseconds per tick for applying meshes; at least one is applied per tick.
MESH_BUDGET_MS = 15.0

_deferred: dict = {}  # job id -> MeshToApply not applied yet (over the tick's budget)

_previews = None  # bpy.utils.previews collection, made on first preview
last_tick_ms = 0.0


def tick() -> float:
    """One timer tick; returns the delay until the next (the `bpy.app.timers` contract)."""
    global last_tick_ms
    started = time.perf_counter()
    applied = SESSION.tick()
    if applied is not None:
        _apply(applied)
    last_tick_ms = (time.perf_counter() - started) * 1000.0
    _redraw()
    busy = any(view.active for view in SESSION.tracker.jobs.values()) or SESSION.tracker.submitting or _deferred
    return ACTIVE_INTERVAL if busy or SESSION.status().state in ("starting", "connecting") else IDLE_INTERVAL


def _apply(applied) -> None:
    tracker = SESSION.tracker
    for job_id, request_id in applied.accepted.items():
        scene_name = SESSION.submit_scenes.pop(request_id, None)
        if _job_item(job_id)[1] is None:
            scene = bpy.data.scenes.get(scene_name or "") or bpy.context.scene
            _add_job_item(scene, job_id, tracker.jobs[job_id].prompt)
            applied.changed.add(job_id)
    _deferred.update(applied.meshes)  # newer meshes replace deferred ones of the same job
    started = time.perf_counter()
    for job_id in list(_deferred):
        if (time.perf_counter() - started) * 1000.0 > MESH_BUDGET_MS:
            break  # the rest waits for the next tick: Blender stays responsive with many jobs streaming
        item = _deferred.pop(job_id)
        view = tracker.jobs[job_id]
        scene, job_item = _job_item(job_id)
        if scene is None:  # a job this Blender did not start (or whose scene was deleted): follow it here
            scene = bpy.context.scene
            job_item = _add_job_item(scene, job_id, view.prompt)
        if item.mesh.vertex_count:
            # The job list's pointer saves scanning every object in the file on each update.
            obj = scene_update.apply_mesh(scene, job_id, view.prompt, item.mesh, item.step,
                                          view.spec.model if view.spec else "", scene_update.spec_json(view.spec),
                                          known=job_item.object)
            job_item.object = obj
        if item.preview is not None:
            show_preview(item.preview.pixels)
            history.store_thumbnail(job_item, item.preview.pixels)
    for job_id in applied.changed:
        view = tracker.jobs.get(job_id)
        if view is None:
            continue
        scene, job_item = _job_item(job_id)
        if job_item is None:
            continue
        job_item.state, job_item.step, job_item.steps = view.state, view.step, view.steps
        job_item.summary, job_item.reason = view.summary(), view.reason[:1024]
        job_item.elapsed = view.elapsed
        if not job_item.spec_json:
            history.record_spec(job_item, view.spec)
        if view.prompt:
            job_item.prompt = view.prompt


def _job_item(job_id: str):
    for scene in bpy.data.scenes:
        state = getattr(scene, "dreamfusion", None)
        if state is None:
            continue
        for item in state.jobs:
            if item.job_id == job_id:
                return scene, item
    return None, None


def _add_job_item(scene, job_id: str, prompt: str):
    item = scene.dreamfusion.jobs.add()
    item.job_id, item.prompt, item.created = job_id, prompt, time.time()
    history.record_spec(item, SESSION.tracker.jobs[job_id].spec if job_id in SESSION.tracker.jobs else None)
    return item


def show_preview(pixels: np.ndarray) -> None:
    """The newest preview as an icon the panel can draw (an ImagePreview: no image datablock per update)."""
    global _previews
    import bpy.utils.previews

    if _previews is None:
        _previews = bpy.utils.previews.new()
    preview = _previews.get(PREVIEW_NAME) or _previews.new(PREVIEW_NAME)
    h, w = pixels.shape[:2]
    preview.image_size = (w, h)
    preview.image_pixels_float.foreach_set(history.blender_rgba(pixels))


def preview_icon() -> int:
    if _previews is None or PREVIEW_NAME not in _previews:
        return 0
    return _previews[PREVIEW_NAME].icon_id


def _redraw() -> None:
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
    global _previews
    _deferred.clear()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if _previews is not None:
        bpy.utils.previews.remove(_previews)
        _previews = None


def register() -> None:
    start()
    # Blender does not unregister add-ons when it quits; atexit still runs, and stops the backend we launched.
    atexit.register(SESSION.shutdown)


def unregister() -> None:
    stop()
    atexit.unregister(SESSION.shutdown)
    SESSION.shutdown()
