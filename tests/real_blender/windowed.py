"""What the windowed scripts here share: the 3D view, a guarded timer step, a screenshot, the result file.

Blender's `--python` does not put a script's folder on sys.path, so each script adds its own folder
before `import windowed`; `tests/helpers/real_blender.py` copies this folder's files side by side.
"""

import json
import subprocess
import traceback

import bpy


def view3d():
    """(window, area, its main region) of the first 3D viewport, or (None, None, None)."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area, next(r for r in area.regions if r.type == "WINDOW")
    return None, None, None


def guarded(step, finish):
    """A `bpy.app.timers` function running `step`; an exception ends the script through `finish(traceback)`."""
    def timer():
        try:
            return step()
        except Exception:
            finish(traceback.format_exc())
            return None

    return timer


def screenshot(path: str) -> subprocess.CompletedProcess:
    """The whole (virtual) screen to `path`, with ImageMagick's `import` (Xvfb runs no window manager)."""
    return subprocess.run(["import", "-window", "root", path], capture_output=True, text=True)


def write_result(out_prefix: str, result: dict) -> None:
    with open(out_prefix + ".json", "w", encoding="utf-8") as handle:
        json.dump(result, handle)
