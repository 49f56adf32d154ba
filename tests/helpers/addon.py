"""Driving the real add-on in the PyPI `bpy` module: enable it from the build output, tick its timer by hand."""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import bpy

BACKEND = Path(sys.executable).with_name("dreamfusion-backend")


def install_from_zip(zip_path: Path, addons_dir: Path):
    """Unpack the built extension where Python finds it and enable it the way Blender does (addon_utils)."""
    import addon_utils

    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(addons_dir / "dreamfusion")
    if str(addons_dir) not in sys.path:
        sys.path.insert(0, str(addons_dir))
    for name in [m for m in sys.modules if m == "dreamfusion" or m.startswith("dreamfusion.")]:
        del sys.modules[name]
    module = addon_utils.enable("dreamfusion", default_set=True, handle_error=_raise)
    assert module is not None, "addon_utils.enable returned nothing"
    return module


def _raise(exc):
    raise exc


def disable() -> None:
    import addon_utils

    addon_utils.disable("dreamfusion", default_set=True, handle_error=_raise)


def tick_until(condition, timeout: float = 180.0, on_tick=None):
    """Call the add-on's registered timer function (timers never fire in module mode) until `condition()`."""
    from dreamfusion import client_loop

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client_loop.tick()
        if on_tick is not None:
            on_tick()
        value = condition()
        if value:
            return value
        # Wait for the backend's next message rather than spinning (like the timer's own interval).
        client = client_loop.SESSION.client
        if client is not None:
            client.socket.poll(50)
        else:
            time.sleep(0.05)
    from dreamfusion.addon_core.session import SESSION

    raise AssertionError(f"timed out; status {SESSION.status()}, jobs {jobs_summary()}")


def jobs_summary() -> list[tuple[str, str, int]]:
    return [(j.job_id, j.state, j.step) for j in bpy.context.scene.dreamfusion.jobs]


def job(index: int = -1):
    jobs = bpy.context.scene.dreamfusion.jobs
    return jobs[index] if len(jobs) else None
