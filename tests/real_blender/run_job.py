"""Runs inside the real Blender (`blender -b --python run_job.py -- ADDRESS MODEL OUT.json`).

Enables the installed extension, points it at a remote backend, presses
Generate, drives the add-on's own timer function until the job ends (timers
do not fire while a --python script runs), and writes what it saw as JSON.
"""

import json
import sys
import time
import traceback

import addon_utils
import bpy

MODULE = "bl_ext.user_default.dreamfusion"


def main(address: str, model: str, out: str) -> None:
    result = {"blender": bpy.app.version_string, "python": sys.version.split()[0]}
    try:
        addon_utils.enable(MODULE, default_set=True, handle_error=lambda exc: (_ for _ in ()).throw(exc))
        import zmq

        from bl_ext.user_default.dreamfusion import client_loop

        result.update(zmq=zmq.__version__, zmq_file=zmq.__file__)
        prefs = bpy.context.preferences.addons[MODULE].preferences
        prefs.backend_mode, prefs.address = "REMOTE", address
        settings = bpy.context.scene.dreamfusion.settings
        settings.model = model
        settings.prompt, settings.seed, settings.steps, settings.stream_every = "a red cube", 2, 20, 5
        bpy.context.scene.dreamfusion.lock_seed = True  # the seed set here, not a drawn one
        settings.render_resolution, settings.mesh_resolution, settings.views_per_step = 32, 32, 1
        result["connect"] = sorted(bpy.ops.dreamfusion.connect())
        result["generate"] = sorted(bpy.ops.dreamfusion.generate())
        jobs = bpy.context.scene.dreamfusion.jobs
        deadline = time.monotonic() + 240
        ticks = []
        while time.monotonic() < deadline and not (len(jobs) and jobs[0].state in ("finished", "failed")):
            client_loop.tick()
            ticks.append(client_loop.last_tick_ms)
            time.sleep(0.05)
        job = jobs[0] if len(jobs) else None
        result["state"] = job.state if job else None
        result["reason"] = job.reason if job else ""
        obj = job.object if job else None
        if obj is not None:
            result.update(object=obj.name, vertices=len(obj.data.vertices),
                          collection=obj.users_collection[0].name,
                          albedo=obj.data.color_attributes.active_color_name,
                          spec_prompt=json.loads(obj["dreamfusion_spec"])["prompt"])
        result["max_tick_ms"] = max(ticks) if ticks else None
        addon_utils.disable(MODULE, default_set=False)
        result["timer_after_disable"] = bpy.app.timers.is_registered(client_loop.tick)
    except Exception:
        result["error"] = traceback.format_exc()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


main(*sys.argv[sys.argv.index("--") + 1:])
