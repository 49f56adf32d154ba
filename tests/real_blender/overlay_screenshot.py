"""Runs inside the real Blender with a window (under Xvfb), no backend needed:

    blender --python overlay_screenshot.py -- OUT_PREFIX [--bench N]

Enables the add-on, frames the scene from a fixed three-quarter view, and
takes screenshots (ImageMagick `import -window root`): OUT_PREFIX_off.png with
the overlay hidden, OUT_PREFIX_on.png with cameras and light shown, and
OUT_PREFIX_disabled.png after disabling the add-on with the toggles still on.
OUT_PREFIX.json holds the screen box the overlay's points project into, the
overlay's rebuild and draw times, and whether its draw handler is gone after
disabling. With `--bench N` it also redraws the viewport N times each way
(Blender's own `wm.redraw_timer`): milliseconds per rebuild after a setting
change, per overlay draw callback, and per whole viewport redraw with the
overlay shown, hidden, and with the add-on disabled.
"""

import math
import os
import subprocess
import sys
import time

import addon_utils
import bpy
from bpy_extras.view3d_utils import location_3d_to_region_2d
from mathutils import Euler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from windowed import guarded, screenshot, view3d, write_result  # noqa: E402

MODULE = "bl_ext.user_default.dreamfusion"
ARGS = sys.argv[sys.argv.index("--") + 1:]
OUT = ARGS[0]
BENCH = int(ARGS[ARGS.index("--bench") + 1]) if "--bench" in ARGS else 0
STATE = {"phase": "setup", "started": time.monotonic(), "result": {"blender": bpy.app.version_string}}
TIMEOUT = 120.0
SETTLE = 1.0


def finish(error: str = "") -> None:
    if error:
        STATE["result"]["error"] = error
    write_result(OUT, STATE["result"])
    bpy.ops.wm.quit_blender()


def shoot(name: str) -> None:
    shot = screenshot(f"{OUT}_{name}.png")
    STATE["result"][f"{name}_rc"] = shot.returncode


def screen_box(window, region, overlay_module, settings) -> list[int]:
    """[left, top, right, bottom] in screen pixels (y down, Xvfb puts the window at the origin) of every
    overlay point in front of the camera, clipped to the viewport region."""
    from bl_ext.user_default.dreamfusion.addon_core.overlay_geometry import SamplingRanges, overlay_geometry

    rv3d = region.data
    geometry = overlay_geometry(SamplingRanges.from_values(overlay_module._values(settings)))
    xs, ys = [], []
    for segments in geometry.groups().values():
        for segment in segments:
            for point in segment:
                xy = location_3d_to_region_2d(region, rv3d, point)
                if xy is not None:
                    xs.append(min(max(xy[0], 0), region.width))
                    ys.append(min(max(xy[1], 0), region.height))
    left, right = window.x + region.x + min(xs), window.x + region.x + max(xs)
    top = window.height - (region.y + max(ys))
    bottom = window.height - (region.y + min(ys))
    return [int(left), int(top), int(math.ceil(right)), int(math.ceil(bottom))]


def redraw_ms(window, area, region, iterations: int) -> float:
    """Wall milliseconds per synchronous redraw of the viewport region."""
    with bpy.context.temp_override(window=window, area=area, region=region):
        start = time.perf_counter()
        bpy.ops.wm.redraw_timer(type="DRAW", iterations=iterations)
        return (time.perf_counter() - start) * 1000.0 / iterations


def median(values):
    values = sorted(values)
    return round(values[len(values) // 2], 3)


def bench(window, area, region, overlay, state) -> dict:
    rebuilds, draws = [], []
    for i in range(BENCH):
        state.settings.camera_azimuth = (-90.0 + i % 7, 90.0)  # a new value each time: the batches rebuild
        redraw_ms(window, area, region, 1)
        rebuilds.append(overlay.stats["rebuild_ms"])
    for _ in range(BENCH):
        redraw_ms(window, area, region, 1)
        draws.append(overlay.stats["draw_ms"])
    shown = redraw_ms(window, area, region, BENCH)
    state.overlay_cameras = state.overlay_lights = False
    hidden = redraw_ms(window, area, region, BENCH)
    state.overlay_cameras = state.overlay_lights = True
    return {"repeats": BENCH, "rebuild_ms_median": median(rebuilds), "rebuild_ms_max": round(max(rebuilds), 3),
            "draw_callback_ms_median": median(draws), "draw_callback_ms_max": round(max(draws), 3),
            "viewport_redraw_ms_overlay_shown": round(shown, 3),
            "viewport_redraw_ms_overlay_hidden": round(hidden, 3)}


def _step():
    result, phase = STATE["result"], STATE["phase"]
    if time.monotonic() - STATE["started"] > TIMEOUT:
        finish(f"timed out in phase {phase}")
        return None
    window, area, region = view3d()
    scene = bpy.context.scene
    if phase == "setup":
        addon_utils.enable(MODULE, default_set=True)
        for obj in list(scene.objects):
            bpy.data.objects.remove(obj)  # nothing but the overlay and the grid in view
        space = area.spaces.active
        space.show_region_ui = False  # the sidebar's tabs change when the add-on is disabled
        space.show_region_toolbar = False
        space.overlay.show_floor = True
        rv3d = region.data
        rv3d.view_perspective = "PERSP"
        rv3d.view_location = (0.0, 0.0, 0.3)
        rv3d.view_rotation = Euler((math.radians(62), 0.0, math.radians(35)), "XYZ").to_quaternion()
        rv3d.view_distance = 9.0
        # The splash screen covers the viewport: Escape closes it (the pointer gives the window focus; Xvfb
        # runs no window manager, so window and screen coordinates agree).
        subprocess.run(["xdotool", "mousemove", "60", str(window.height - 120), "key", "Escape"], check=False)
        STATE["phase"], STATE["at"] = "off", time.monotonic() + SETTLE
        return 0.2
    if time.monotonic() < STATE["at"]:
        area.tag_redraw()
        return 0.2
    overlay = sys.modules[MODULE + ".overlay"]
    state = scene.dreamfusion if hasattr(scene, "dreamfusion") else None
    if phase == "off":
        result["handler_installed"] = overlay.handler_installed()
        shoot("off")
        state.overlay_cameras = state.overlay_lights = True
        STATE["phase"], STATE["at"] = "on", time.monotonic() + SETTLE
        return 0.2
    if phase == "on":
        shoot("on")
        result["box"] = screen_box(window, region, overlay, state.settings)
        result["screen"] = [window.width, window.height]
        result["first_stats"] = dict(overlay.stats)
        # A setting change rebuilds the batches once; unchanged redraws reuse them.
        state.settings.camera_azimuth = (-60.0, 60.0)
        STATE["phase"], STATE["at"] = "edited", time.monotonic() + SETTLE
        return 0.2
    if phase == "edited":
        result["edited_stats"] = dict(overlay.stats)
        if BENCH:
            result["bench"] = bench(window, area, region, overlay, state)
        STATE["overlay"] = overlay
        addon_utils.disable(MODULE, default_set=False)
        result["handler_after_disable"] = overlay.handler_installed()
        STATE["phase"], STATE["at"] = "disabled", time.monotonic() + SETTLE
        return 0.2
    if phase == "disabled":
        shoot("disabled")
        if BENCH:
            result["bench"]["viewport_redraw_ms_addon_disabled"] = round(redraw_ms(window, area, region, BENCH), 3)
        finish()
        return None
    return 0.2


bpy.app.timers.register(guarded(_step, finish), first_interval=1.0)
