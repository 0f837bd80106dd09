"""Everything that imports bpy: operators, panels, preferences, scene import and export.

Importing this package imports nothing from bpy; register() pulls the UI modules in, so the
batch command (operators.headless) and the core stay importable on their own.
"""

import importlib

_MODULE_NAMES = ("properties", "preferences", "reconstruct", "video", "retarget", "export", "panel")
_modules = []


def register():
    _modules.clear()
    for name in _MODULE_NAMES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register()
        _modules.append(module)


def unregister():
    from . import session

    session.shutdown()
    for m in reversed(_modules):
        m.unregister()
    _modules.clear()
