"""Runs inside the real Blender with a window (under Xvfb):

    blender --python panel_screenshot.py -- ADDRESS MODEL PROMPT STEPS SHOT_AT_STEP OUT_PREFIX

Opens the DreamFusion sidebar tab, connects to the backend, presses Generate
and lets Blender's own timers stream the job (they fire in a real UI). Once
the job passes SHOT_AT_STEP it frames the object, takes a screenshot of the
screen (ImageMagick `import -window root`) to OUT_PREFIX.png, writes what it
saw to OUT_PREFIX.json, cancels the job and quits.
"""

import os
import subprocess
import sys
import time

import addon_utils
import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from windowed import guarded, screenshot, view3d, write_result  # noqa: E402

MODULE = "bl_ext.user_default.dreamfusion"
ADDRESS, MODEL, PROMPT, STEPS, SHOT_AT, OUT = sys.argv[sys.argv.index("--") + 1:]
STATE = {"phase": "setup", "started": time.monotonic(), "result": {"blender": bpy.app.version_string}}
TIMEOUT = 420.0


def finish(error: str = "") -> None:
    result = STATE["result"]
    if error:
        result["error"] = error
    write_result(OUT, result)
    try:
        bpy.ops.dreamfusion.cancel()
    except Exception:
        pass
    addon_utils.disable(MODULE, default_set=False)
    bpy.ops.wm.quit_blender()


def _step():
    result, phase = STATE["result"], STATE["phase"]
    if time.monotonic() - STATE["started"] > TIMEOUT:
        finish(f"timed out in phase {phase}; jobs {[(j.state, j.step) for j in bpy.context.scene.dreamfusion.jobs]}")
        return None
    window, area, _ = view3d()
    if phase == "setup":
        addon_utils.enable(MODULE, default_set=True)
        prefs = bpy.context.preferences.addons[MODULE].preferences
        prefs.backend_mode, prefs.address = "REMOTE", ADDRESS
        scene = bpy.context.scene
        for obj in list(scene.objects):  # the startup cube would hide a cube prompt
            if obj.type == "MESH":
                bpy.data.objects.remove(obj)
        settings = scene.dreamfusion.settings
        settings.model = MODEL  # applies a built-in model's recommended settings
        settings.prompt, settings.steps, settings.seed = PROMPT, int(STEPS), 0
        scene.dreamfusion.lock_seed = True  # the same shot every time (unlocked, Generate draws a seed)
        space = area.spaces.active
        space.show_region_ui = True
        space.shading.type = "SOLID"
        space.shading.color_type = "VERTEX"  # Solid mode shows the active colour attribute
        space.overlay.show_floor = True
        sidebar = next(r for r in area.regions if r.type == "UI")
        try:
            sidebar.active_panel_category = "DreamFusion"
        except AttributeError:  # read-only before Blender 4.4: click the tab instead (see phase "tab")
            pass
        STATE["sidebar"] = sidebar
        with bpy.context.temp_override(window=window, area=area):
            result["connect"] = sorted(bpy.ops.dreamfusion.connect())
            result["generate"] = sorted(bpy.ops.dreamfusion.generate())
        STATE["phase"], STATE["clicks"] = "tab", 0
        return 0.5
    if phase == "tab":
        sidebar = STATE["sidebar"]
        if sidebar.active_panel_category == "DreamFusion":
            STATE["phase"] = "running"
            return 0.2
        # Walk down the tab strip on the sidebar's right edge, one click per tick, until our tab is active.
        # Region coordinates are window-relative with y up; X11's grow down from the screen's top (Xvfb runs
        # no window manager, so the window sits at the origin).
        top = window.height - (sidebar.y + sidebar.height)
        x, y = window.x + sidebar.x + sidebar.width - 8, top + 20 + 12 * STATE["clicks"]
        if STATE["clicks"] > 40:
            finish(f"could not find the DreamFusion tab (category {sidebar.active_panel_category!r})")
            return None
        subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "1"], check=False)
        STATE["clicks"] += 1
        return 0.3
    jobs = bpy.context.scene.dreamfusion.jobs
    job = jobs[0] if len(jobs) else None
    if phase == "running":
        if job is not None and job.state in ("failed", "cancelled"):
            finish(f"job {job.state}: {job.reason}")
            return None
        if job is not None and job.object is not None and (job.step >= int(SHOT_AT) or job.state == "finished"):
            region = next(r for r in area.regions if r.type == "WINDOW")
            for obj in bpy.context.view_layer.objects:
                obj.select_set(obj == job.object)
            bpy.context.view_layer.objects.active = job.object
            with bpy.context.temp_override(window=window, area=area, region=region):
                bpy.ops.view3d.view_selected()
            STATE["phase"], STATE["shot_after"] = "settle", time.monotonic() + 1.5
        return 0.2
    if phase == "settle":
        if time.monotonic() < STATE["shot_after"]:
            return 0.2
        shot = screenshot(OUT + ".png")
        result["sidebar_category"] = STATE["sidebar"].active_panel_category
        result.update(screenshot_rc=shot.returncode, screenshot_err=shot.stderr[-500:], state=job.state,
                      step=job.step, steps=job.steps, vertices=len(job.object.data.vertices),
                      panel=hasattr(bpy.types, "VIEW3D_PT_dreamfusion"))
        finish()
        return None
    return 0.2


bpy.app.timers.register(guarded(_step, finish), first_interval=1.0)
