"""The viewport overlay: where the next job's cameras and light can be, and the scene cube, as wire lines.

A POST_VIEW draw handler on the 3D viewport. The lines come from the pure
`addon_core.overlay_geometry`; their GPU batches are cached on the setting values
they were built from, so a redraw with unchanged settings only submits the
cached batches, and a hidden overlay returns before touching the GPU. No
handler in background mode (no viewport there).
"""

from __future__ import annotations

import time

import bpy

from .addon_core.overlay_geometry import SamplingRanges, overlay_geometry

#: RGBA per group (Blender's theme-neutral overlay colours: cameras cyan, front red, light yellow).
COLOURS = {"scene_cube": (0.75, 0.75, 0.75, 0.5), "camera_band": (0.25, 0.8, 1.0, 0.8),
           "frusta": (0.25, 0.8, 1.0, 0.45), "front": (1.0, 0.3, 0.25, 1.0), "lights": (1.0, 0.85, 0.2, 0.7)}
WIDTHS = {"scene_cube": 1.0, "camera_band": 1.5, "frusta": 1.0, "front": 2.5, "lights": 1.5}
RANGE_FIELDS = ("camera_radius", "camera_elevation", "camera_azimuth", "camera_fov", "light_placement",
                "light_distance", "light_offset", "light_elevation")

_handle = None
_cache: dict = {"key": None, "shader": None, "batches": ()}
#: What the bench and tests read: rebuild count and the last rebuild's / draw's milliseconds.
stats = {"rebuilds": 0, "rebuild_ms": 0.0, "draws": 0, "draw_ms": 0.0}


def visible_parts(scene) -> tuple[bool, bool]:
    """(cameras, lights) to draw: the scene's toggles, both off while one of its jobs runs unless the artist
    asked to keep the overlay then."""
    state = getattr(scene, "dreamfusion", None)
    if state is None:
        return False, False
    if not state.overlay_while_running and any(item.active for item in state.jobs):
        return False, False
    return state.overlay_cameras, state.overlay_lights


def hidden_reason(scene) -> str:
    """Why a toggled-on overlay draws nothing, in words for the panel ("" when it draws, or is simply off)."""
    state = getattr(scene, "dreamfusion", None)
    if state is None or not (state.overlay_cameras or state.overlay_lights) or any(visible_parts(scene)):
        return ""
    running = next((item for item in state.jobs if item.active), None)
    if running is not None:
        return (f"Hidden while a job is {running.state} (so the growing object is unobstructed): "
                "turn on Keep While Running (▶ beside the toggle) to see it now")
    return ""


def _values(settings) -> dict:
    values = {}
    for name in RANGE_FIELDS:
        value = getattr(settings, name)
        values[name] = value if isinstance(value, (str, float, int)) else tuple(round(v, 6) for v in value)
    return values


def batches_for(settings, cameras: bool, lights: bool):
    """(shader, [(batch, colour, width)]) for these settings, rebuilt only when a drawn value changed."""
    values = _values(settings)
    key = (tuple(values.values()), cameras, lights)
    if _cache["key"] != key:
        import gpu
        from gpu_extras.batch import batch_for_shader

        started = time.perf_counter()
        shader = gpu.shader.from_builtin("POLYLINE_UNIFORM_COLOR")
        groups = overlay_geometry(SamplingRanges.from_values(values)).groups(cameras=cameras, lights=lights)
        built = tuple((batch_for_shader(shader, "LINES", {"pos": [p for segment in segments for p in segment]}),
                       COLOURS[name], WIDTHS[name]) for name, segments in groups.items() if segments)
        _cache.update(key=key, shader=shader, batches=built)
        stats["rebuilds"] += 1
        stats["rebuild_ms"] = (time.perf_counter() - started) * 1000.0
    return _cache["shader"], _cache["batches"]


def draw() -> None:
    context = bpy.context
    scene = context.scene
    cameras, lights = visible_parts(scene) if scene is not None else (False, False)
    if not (cameras or lights):
        return
    import gpu

    started = time.perf_counter()
    shader, batches = batches_for(scene.dreamfusion.settings, cameras, lights)
    region = context.region
    gpu.state.blend_set("ALPHA")
    gpu.state.depth_test_set("LESS_EQUAL")  # the object in front hides the lines behind it
    shader.bind()
    shader.uniform_float("viewportSize", (region.width, region.height))
    for batch, colour, width in batches:
        shader.uniform_float("lineWidth", width)
        shader.uniform_float("color", colour)
        batch.draw(shader)
    gpu.state.depth_test_set("NONE")
    gpu.state.blend_set("NONE")
    stats["draws"] += 1
    stats["draw_ms"] = (time.perf_counter() - started) * 1000.0


def redraw_viewports() -> None:
    """Redraw the 3D views so a toggled or edited overlay shows at once (settings' update hooks call this)."""
    window_manager = bpy.context.window_manager
    for window in getattr(window_manager, "windows", ()):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def handler_installed() -> bool:
    return _handle is not None


def register() -> None:
    global _handle
    if bpy.app.background or _handle is not None:
        return
    _handle = bpy.types.SpaceView3D.draw_handler_add(draw, (), "WINDOW", "POST_VIEW")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    _cache.update(key=None, shader=None, batches=())
