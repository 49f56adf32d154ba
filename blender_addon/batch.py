"""Headless batch generation: `blender -b -c dreamfusion batch --prompts FILE --out DIR ...`.

Timers never fire in `blender --background`, so this drives the same
sessions, job tracker and scene update as the panel from its own blocking
loop. A row's `init_mesh` file is read with Blender's own importer just
before its submit (`mesh_source.import_mesh_file`; nothing of it stays in the
file). For every prompt that finishes: its object in the open scene
(collection "DreamFusion Batch", laid out side by side), `<slug>.glb`,
and `results.blend` (that collection in a scene of its own) rewritten.
`summary.json` is rewritten after every change, so an interrupted or
crashed batch still leaves an honest record.

Why one .blend for all results: a batch is reviewed as a set (open one file,
see every result next to the others, each object carrying its JobSpec), and
the per-prompt .glb files already serve pipelines that want one asset per
file.

Scripts that drive Blender directly call `main()` with the same words:

    blender -b --python-expr "import sys, bl_ext.user_default.dreamfusion.batch as b; \\
        sys.exit(b.main(sys.argv[sys.argv.index('--') + 1:]))" -- batch --prompts p.txt --out out
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import bpy

from . import mesh_source, preferences, scene_update
from .addon_core.batch_options import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, BatchOptions, UsageError,
                                       parse_batch_args, usage)
from .addon_core.batch_plan import plan_batch
from .addon_core.batch_runner import BatchRunner, ItemResult
from .addon_core.job_tracker import MeshToApply
from .addon_core.local_backend import LocalBackendError, split_folders
from .addon_core.png import encode_png
from .addon_core.prompt_file import PromptFileError, read_prompt_file
from .addon_core.session import Session
from .shared.atomic import atomic_write
from .shared.jobspec import DEFAULT_MODEL, model_source
from .shared.recommended import recommendations
from .shared.states import FAILED, FINISHED, INTERRUPTED, RUNNING

#: summary.json's `status` of a batch whose every prompt finished and no line was skipped.
OK = "ok"

COMMAND = "dreamfusion"
BLEND_NAME = "results.blend"
SUMMARY_NAME = "summary.json"
#: Results scene written to results.blend (the objects are also linked into the current scene).
SCENE_NAME = "DreamFusion Batch"
SPACING = 2.5  # metres between results; the scene bound is [-1, 1]^3

_handle = None


def main(argv: list[str]) -> int:
    """The `dreamfusion` command: `batch ...` (or `help`). Returns the exit status."""
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(f"usage: blender -b -c {COMMAND} batch --help\n\n{usage()}")
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] != "batch":
        print(f"{COMMAND}: unknown command {argv[0]!r}; the one command is 'batch' (try: batch --help)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        options = parse_batch_args(argv[1:])
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help prints and exits inside argparse
        return int(exc.code or 0)
    return run(options)


def run(options: BatchOptions) -> int:
    try:
        prompt_file = read_prompt_file(options.prompts)
    except PromptFileError as exc:
        print(f"dreamfusion batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    prefs = _preferences()
    default_model = getattr(prefs, "default_model", "") or DEFAULT_MODEL
    items, bad = plan_batch(prompt_file, options.flags, options.preset, recommendations, default_model)
    for line in bad:
        print(f"dreamfusion batch: {options.prompts.name} line {line.line} skipped: {line.error}", flush=True)
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"dreamfusion batch: --out {options.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    writer = _Writer(options, items, bad)
    if not items:
        print(f"dreamfusion batch: no prompt to run in {options.prompts}", file=sys.stderr)
        writer.write_summary()
        return EXIT_USAGE if not bad else EXIT_FAILED
    try:
        sessions = _sessions(options, prefs, items)
    except (LocalBackendError, OSError, ValueError) as exc:
        print(f"dreamfusion batch: cannot reach a backend: {exc}", file=sys.stderr)
        return EXIT_FAILED
    runner = BatchRunner(items, sessions, writer.on_result, log=_log, progress_every=options.progress_every,
                         on_change=lambda result: writer.write_summary(),
                         connect_timeout=options.backend_timeout, lost_timeout=options.backend_timeout,
                         load_init_mesh=lambda item: mesh_source.import_mesh_file(item.init_mesh))
    writer.runner = runner
    _log(f"dreamfusion batch: {len(items)} prompt(s) on {len(sessions)} backend(s) -> {options.out}")
    stop = _StopSignal()
    try:
        with stop:
            finished = runner.run(should_stop=lambda: stop.received is not None)
    finally:
        runner.shutdown()
    writer.write_summary(interrupted=not finished)
    _log(f"dreamfusion batch: {sum(r.ok for r in runner.results)}/{len(items)} finished, {len(bad)} line(s) "
         f"skipped; summary: {options.out / SUMMARY_NAME}")
    # The exit status says what summary.json says.
    return {INTERRUPTED: EXIT_INTERRUPTED, OK: EXIT_OK}.get(writer.status(not finished), EXIT_FAILED)


# --- backends ------------------------------------------------------------------------------------------


def _preferences():
    try:
        return preferences.get()
    except (KeyError, AttributeError):  # called from a script without the add-on enabled
        return None


def _sessions(options: BatchOptions, prefs, items) -> dict[str, Session]:
    """One session per --backend address; with none, what the preferences say (a local backend by default)."""
    sessions: dict[str, Session] = {}
    try:
        _open_sessions(options, prefs, sessions, items)
    except BaseException:
        for session in sessions.values():
            session.shutdown()
        raise
    return sessions


def _open_sessions(options: BatchOptions, prefs, sessions: dict[str, Session], items) -> None:
    server_key = options.server_key or (bpy.path.abspath(prefs.server_key) if prefs else "")
    client_key = options.client_secret_key or (bpy.path.abspath(prefs.client_secret_key) if prefs else "")
    addresses = list(dict.fromkeys(options.backends))
    if not addresses and prefs is not None and prefs.backend_mode == "REMOTE":
        addresses = [prefs.address]
    for address in addresses:
        session = Session()
        session.connect(address, server_key, client_key)
        sessions[address] = session
    if not sessions:
        executable = options.backend_executable or (bpy.path.abspath(prefs.backend_executable) if prefs else "")
        device = options.device or (prefs.device if prefs else "auto")
        data_dir = options.jobs_dir or (bpy.path.abspath(prefs.data_dir) if prefs else "")
        session = Session()
        sessions["local backend"] = session
        # The backend loads local models only from folders it is told about: the prompts' and the preferences'.
        models = sorted({item.spec.model for item in items if model_source(item.spec.model) == "local"})
        folders = [bpy.path.abspath(p) for p in split_folders(prefs.model_folders)] if prefs else []
        session.start_local(executable, device, data_dir, allow_paths=[*models, *folders])


# --- results -------------------------------------------------------------------------------------------


class _Writer:
    """Puts each finished result into the scene and onto disk; keeps summary.json current."""

    def __init__(self, options: BatchOptions, items, bad):
        self.options, self.items, self.bad = options, items, bad
        self.runner: BatchRunner | None = None
        self.started = time.time()
        self.columns = max(1, math.ceil(math.sqrt(len(items))))
        self.collection = self.results_scene = None

    def _results_collection(self) -> bpy.types.Collection:
        """This run's own scene and collection, made with the first result (Blender numbers repeats:
        "DreamFusion Batch.001"), so a second batch in one session writes only its own results. The
        collection is also linked into the open scene, where the exporter and a watching artist see it."""
        if self.collection is None:
            self.results_scene = bpy.data.scenes.new(SCENE_NAME)
            self.collection = bpy.data.collections.new(SCENE_NAME)
            self.results_scene.collection.children.link(self.collection)
            bpy.context.scene.collection.children.link(self.collection)
        return self.collection

    def on_result(self, result: ItemResult, final: MeshToApply) -> None:
        item, out = result.item, self.options.out
        spec = item.spec
        collection = self._results_collection()
        obj = scene_update.apply_mesh(bpy.context.scene, result.job_id, spec.prompt, final.mesh, final.step,
                                      spec.model, scene_update.spec_json(spec), collection=collection)
        if final.texture is not None:  # headless: nothing to keep responsive, encode it here
            scene_update.apply_texture(obj, result.job_id, final.texture.uvs, encode_png(final.texture.image))
        obj["dreamfusion_batch_line"] = item.line
        if item.init_mesh:
            obj["dreamfusion_init_mesh"] = item.init_mesh  # the file it started from
        obj.location = (0.0, 0.0, 0.0)  # each .glb is centred on its own origin
        glb = out / f"{item.slug}.glb"
        scene_update.export_glb(bpy.context, obj, str(glb))
        row, column = divmod(item.index - 1, self.columns)
        obj.location = (column * SPACING, -row * SPACING, 0.0)
        blend = out / BLEND_NAME
        # Only the results scene and what it uses: the user's own file (or Blender's startup cube) stays out.
        atomic_write(blend, lambda tmp: bpy.data.libraries.write(tmp, {self.results_scene}, compress=True))
        result.files = {"glb": str(glb), "blend": str(blend)}

    def status(self, interrupted: bool = False) -> str:
        """The batch as a whole, in a job's words where they fit: interrupted, running, ok (every prompt finished,
        no line skipped) or failed."""
        if interrupted:
            return INTERRUPTED
        if self.runner is not None and not self.runner.done:
            return RUNNING
        results = self.runner.results if self.runner is not None else []
        return OK if self.items and all(r.ok for r in results) and not self.bad else FAILED

    def write_summary(self, interrupted: bool = False) -> None:
        runner = self.runner
        results = runner.results if runner is not None else []
        summary = {
            "prompts": str(self.options.prompts), "out": str(self.options.out),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 2),
            "status": self.status(interrupted),
            "backends": [b.name for b in runner.backends] if runner is not None else [],
            FINISHED: sum(r.ok for r in results), "total": len(self.items),  # how many prompts finished
            "results": [r.to_dict() for r in results],
            "skipped": [b.to_dict() for b in self.bad],
        }
        atomic_write(self.options.out / SUMMARY_NAME,
                     lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))


def _log(line: str) -> None:
    print(line, flush=True)


class _StopSignal:
    """Turns Ctrl-C / SIGTERM into a flag the loop checks, so running jobs get cancelled and the summary written."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except (ValueError, OSError):  # not the main thread, or a platform without it
                pass
        return self

    def _handle(self, number, frame) -> None:
        if self.received is None:
            _log(f"dreamfusion batch: {signal.Signals(number).name}: cancelling running jobs…")
        self.received = number

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            # None: Blender's own C handler, which Python cannot put back; the default is the nearest thing.
            signal.signal(number, signal.SIG_DFL if previous is None else previous)


# --- registration ----------------------------------------------------------------------------------


def register() -> None:
    global _handle
    if hasattr(bpy.utils, "register_cli_command"):  # Blender 4.2+
        _handle = bpy.utils.register_cli_command(COMMAND, main)


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.utils.unregister_cli_command(_handle)
        _handle = None
