"""DreamFusion for Blender: the add-on.

The thin Blender layer over the pure-Python `shared` protocol package, which
`build_addon.py` vendors into this folder (so it is imported relatively).
The panel, operators and client loop arrive with the add-on issue.
"""

from . import panel

_modules = (panel,)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
