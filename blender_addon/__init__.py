"""DreamFusion for Blender: the add-on.

A thin Blender layer over the pure-Python `shared` package (protocol,
client, job tracking, local backend launcher), which `build_addon.py`
vendors into this folder (so it is imported relatively).
"""

from . import batch, client_loop, history, operators, overlay, panel, preferences, properties

# Order matters: properties before the panels and overlay that draw them; the timer last, so it stops first.
_modules = (preferences, properties, operators, history, panel, overlay, batch, client_loop)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
