"""Runs inside the real Blender with a window (under Xvfb):

    blender --python refine_screenshot.py -- ADDRESS MODEL PROMPT STEPS OUT_PREFIX [monkey]

The Refine flow as an artist clicks it, with Blender's own timers streaming: select a mesh (the startup cube,
or with `monkey` a subdivided Suzanne, which shows vertex colours better), open the DreamFusion tab, screenshot
the Refine sub-panel offering Generate From / Texture This Mesh (OUT_PREFIX_mesh.png), press Texture This
Mesh, wait for the job, screenshot the panel offering Continue / Re-prompt for the result
(OUT_PREFIX_result.png), press Continue (+3 steps) and wait for that job. Writes what it saw to
OUT_PREFIX.json and quits.
"""

import os
import subprocess
import sys
import time

import addon_utils
import bpy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from windowed import guarded, screenshot, view3d, write_result  # noqa: E402

MODULE = "bl_ext.user_default.dreamfusion"
ARGS = sys.argv[sys.argv.index("--") + 1:]
ADDRESS, MODEL, PROMPT, STEPS, OUT = ARGS[:5]
MONKEY = "monkey" in ARGS[5:]
STATE = {"phase": "setup", "started": time.monotonic(), "result": {"blender": bpy.app.version_string}}
TIMEOUT = float(os.environ.get("REFINE_TIMEOUT", "480"))


def finish(error: str = "") -> None:
    result = STATE["result"]
    if error:
        result["error"] = error
    write_result(OUT, result)
    addon_utils.disable(MODULE, default_set=False)
    bpy.ops.wm.quit_blender()


def positions(obj) -> list:
    out = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", out)
    return out.round(5).tolist()


def albedo_spread(obj) -> float:
    """How much the albedo varies (0 for one flat colour): the colours were written, not left grey."""
    attribute = obj.data.color_attributes.get("albedo")
    if attribute is None:
        return -1.0
    out = np.empty(len(obj.data.vertices) * 4, np.float32)
    attribute.data.foreach_get("color_srgb", out)
    return float(np.ptp(out.reshape(-1, 4)[:, :3], axis=0).max())


def show(obj, window, area) -> None:
    """Frame `obj` in the viewport (selected and active)."""
    for other in bpy.context.view_layer.objects:
        other.select_set(other == obj)
    bpy.context.view_layer.objects.active = obj
    region = next(r for r in area.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.view3d.view_selected()
    area.spaces.active.region_3d.view_distance *= 1.6  # room around it, and beside the sidebar


def press(operator, window, area, **properties) -> list:
    with bpy.context.temp_override(window=window, area=area):
        return sorted(operator(**properties))


def job_ended(jobs, count: int):
    """The newest job once it ended, after the list grew past `count` (None while it runs)."""
    if len(jobs) <= count:
        return None
    job = jobs[-1]
    return job if job.state in ("finished", "failed", "cancelled") else None


def _step():
    result, phase = STATE["result"], STATE["phase"]
    if time.monotonic() - STATE["started"] > TIMEOUT:
        session = getattr(sys.modules.get(MODULE + ".addon_core.session"), "SESSION", None)
        views = [(v.state, v.phase, v.step) for v in session.tracker.jobs.values()] if session else "?"
        finish(f"timed out in phase {phase}; jobs {views}; notices {list(session.notices) if session else '?'}")
        return None
    window, area, _ = view3d()
    scene = bpy.context.scene
    jobs = scene.dreamfusion.jobs
    if phase == "setup":
        addon_utils.enable(MODULE, default_set=True)
        bpy.context.preferences.view.smooth_view = 0  # framing takes effect at once, not over an animation
        prefs = bpy.context.preferences.addons[MODULE].preferences
        prefs.backend_mode, prefs.address = "REMOTE", ADDRESS
        source = bpy.data.objects["Cube"]
        if MONKEY:
            bpy.data.objects.remove(source)
            bpy.ops.mesh.primitive_monkey_add(size=1.6)
            source = bpy.context.active_object
            source.modifiers.new("Subdivision", "SUBSURF").levels = 1
            source.data.shade_smooth()
        bpy.context.view_layer.update()
        STATE["source"], STATE["before"] = source.name, positions(source)
        settings = scene.dreamfusion.settings
        settings.model = MODEL  # applies a built-in model's recommended settings
        settings.prompt, settings.steps, settings.seed = PROMPT, int(STEPS), 1
        scene.dreamfusion.lock_seed = True  # the same shot every time (unlocked, each job draws a seed)
        if MODEL != "toy-shapes":
            settings.render_resolution, settings.mesh_resolution, settings.views_per_step = 32, 32, 1
        settings.stream_every = max(1, int(STEPS) // 3)
        space = area.spaces.active
        space.show_region_ui = True
        space.shading.type = "SOLID"
        space.shading.color_type = "VERTEX"  # Solid mode shows the active colour attribute
        sidebar = next(r for r in area.regions if r.type == "UI")
        try:
            sidebar.active_panel_category = "DreamFusion"
        except AttributeError:  # read-only before Blender 4.4: click the tab instead (see phase "tab")
            pass
        STATE["sidebar"] = sidebar
        result["connect"] = press(bpy.ops.dreamfusion.connect, window, area)
        show(source, window, area)
        STATE["phase"], STATE["clicks"] = "tab", 0
        return 0.5
    if phase == "tab":
        sidebar = STATE["sidebar"]
        if sidebar.active_panel_category == "DreamFusion":
            STATE["phase"], STATE["shot_after"] = "shot_mesh", time.monotonic() + 1.5
            return 0.2
        # Walk down the tab strip on the sidebar's right edge, one click per tick, until our tab is active
        # (region y grows up from the window's bottom; X11's grows down from the screen's top).
        top = window.height - (sidebar.y + sidebar.height)
        x, y = window.x + sidebar.x + sidebar.width - 8, top + 20 + 12 * STATE["clicks"]
        if STATE["clicks"] > 40:
            finish(f"could not find the DreamFusion tab (category {sidebar.active_panel_category!r})")
            return None
        subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "1"], check=False)
        STATE["clicks"] += 1
        return 0.3
    if phase == "shot_mesh":
        if time.monotonic() < STATE["shot_after"] or not (bpy.context.window_manager and scene):
            return 0.2
        result["sidebar_category"] = STATE["sidebar"].active_panel_category
        result["mesh_shot_rc"] = screenshot(OUT + "_mesh.png").returncode
        STATE["count"] = len(jobs)
        result["texture"] = press(bpy.ops.dreamfusion.texture_mesh, window, area)
        STATE["textured"] = bpy.context.view_layer.objects.active.name
        STATE["phase"] = "texturing"
        return 0.2
    if phase == "texturing":
        job = job_ended(jobs, STATE["count"])
        if job is None:
            return 0.2
        source, obj = bpy.data.objects[STATE["source"]], job.object
        result["textured"] = {
            "state": job.state, "reason": job.reason, "step": job.step, "object": obj.name if obj else None,
            "vertices": len(obj.data.vertices) if obj else 0, "albedo_spread": albedo_spread(obj) if obj else -1,
            "source_property": obj.get("dreamfusion_source_object") if obj else None,
            "same_place": bool(obj and np.allclose(np.array(obj.matrix_world), np.array(source.matrix_world))),
            "source_vertices": len(source.data.vertices), "source_unchanged": positions(source) == STATE["before"],
            "source_hidden": source.hide_get(), "item_source": job.source_object}
        if job.state != "finished" or obj is None:
            finish(f"the texture job ended {job.state}: {job.reason}")
            return None
        show(obj, window, area)
        # The Refine panel sits below the job's preview and the list: wheel the sidebar down to it.
        sidebar = STATE["sidebar"]
        x, y = window.x + sidebar.x + sidebar.width // 2, window.height - (sidebar.y + sidebar.height // 2)
        subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "--repeat", "8", "--delay", "30", "5"],
                       check=False)
        STATE["phase"], STATE["shot_after"], STATE["parent"] = "shot_result", time.monotonic() + 1.5, job.job_id
        return 0.2
    if phase == "shot_result":
        if time.monotonic() < STATE["shot_after"]:
            return 0.2
        result["result_shot_rc"] = screenshot(OUT + "_result.png").returncode
        scene.dreamfusion.refine_steps = 3
        STATE["count"] = len(jobs)
        result["continue"] = press(bpy.ops.dreamfusion.continue_job, window, area)
        STATE["phase"] = "continuing"
        return 0.2
    if phase == "continuing":
        job = job_ended(jobs, STATE["count"])
        if job is None:
            return 0.2
        obj = job.object
        result["continued"] = {
            "state": job.state, "reason": job.reason, "step": job.step, "steps": job.steps,
            "parent_property": obj.get("dreamfusion_parent_job") if obj else None, "item_parent": job.parent_job,
            "parent": STATE["parent"], "vertices": len(obj.data.vertices) if obj else 0}
        finish()
        return None
    return 0.2


bpy.app.timers.register(guarded(_step, finish), first_interval=1.0)
