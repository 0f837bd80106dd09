"""DualPM core: numpy-only building blocks shared by the Blender extension, the command line,
the inference server and the training code.

Nothing in this package imports bpy, torch or model_server (see DESIGN.md, "Layout").
"""

__version__ = "0.1.0"
