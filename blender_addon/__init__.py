"""DreamFusion for Blender: the add-on.

A thin Blender layer (the modules here, which use `bpy`) over two pure-Python packages that import no
`bpy`: `shared/` (the wire protocol and client, which `build_addon.py` vendors into this folder) and
`addon_core/` (job tracking, refinement specs, batch planning, prompt files, the local backend launcher,
the overlay's geometry). Everything is imported relatively, so the add-on works under any package name. The
`bpy` modules load on first use (`register()`, or an attribute such as `dreamfusion.panel`), so importing
`addon_core` or `shared` from the built extension needs no Blender. See docs/ARCHITECTURE.md.
"""

import importlib

# Order matters: properties before the panels and overlay that draw them; the timer last, so it stops first.
_REGISTERED = ("preferences", "properties", "operators", "refine", "history", "panel", "overlay", "batch",
               "client_loop")
_BLENDER_MODULES = frozenset(_REGISTERED) | {"scene_update", "session", "mesh_source"}


def __getattr__(name: str):
    if name in _BLENDER_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Why register() stops when Blender's Python has no numpy (what its error says, in Preferences and the console).
NUMPY_MISSING = (
    "DreamFusion needs numpy, which this Blender's Python does not have. Blender from blender.org ships it; a "
    "Linux distribution's Blender package uses the system Python, so install that Python's numpy: "
    "`sudo apt install python3-numpy` (Debian, Ubuntu), `sudo dnf install python3-numpy` (Fedora) or "
    "`sudo pacman -S python-numpy` (Arch), then enable the add-on again")


def _require_numpy() -> None:
    # Checked first, so a missing numpy is named with its remedy instead of surfacing as a bare
    # "No module named 'numpy'" from whichever module happens to import it first.
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        raise ImportError(NUMPY_MISSING, name="numpy") from exc


def register() -> None:
    _require_numpy()
    # Import them all before registering any, so a module that fails to import leaves nothing half-registered.
    modules = [importlib.import_module(f".{name}", __name__) for name in _REGISTERED]
    for module in modules:
        module.register()


def unregister() -> None:
    for name in reversed(_REGISTERED):
        importlib.import_module(f".{name}", __name__).unregister()
