"""DualPM for Blender: register() and unregister() only; everything else lives in operators/."""


def register():
    from .operators import register as _register

    _register()


def unregister():
    from .operators import unregister as _unregister

    _unregister()
