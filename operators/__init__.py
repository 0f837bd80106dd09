"""Everything that imports bpy: operators, panels, preferences, scene import and export."""

_modules = []


def register():
    for m in _modules:
        m.register()


def unregister():
    for m in reversed(_modules):
        m.unregister()
