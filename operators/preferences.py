"""Add-on preferences: where inference runs, on which device, with which model and thresholds."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

# The add-on's package: the extension root ("bl_ext.user_default.dualpm"), whose child we are.
ADDON_PACKAGE = __package__.rpartition(".")[0] or __package__

INFERENCE_MODES = [
    ("SUBPROCESS", "Blender's Python", "Run the model server as a subprocess of Blender, on Blender's own "
     "Python with the ONNX Runtime bundled in the extension (CPU)", 0),
    ("PYTHON", "Another Python", "Run the model server on another Python interpreter, e.g. one with "
     "onnxruntime-gpu for CUDA", 1),
    ("REMOTE", "Server URL", "Use a running inference server (ours or NVIDIA Triton) at a URL with a token", 2),
    ("IN_PROCESS", "Inside Blender", "Run ONNX Runtime inside Blender's process on a worker thread "
     "(no subprocess; a crash of the runtime takes Blender down with it)", 3),
]

DEVICES = [
    ("auto", "Auto", "CUDA when the runtime has it, else the CPU"),
    ("cpu", "CPU", "Always the CPU"),
    ("cuda", "CUDA", "NVIDIA GPU (needs onnxruntime-gpu and CUDA)"),
]


class DUALPM_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    inference: EnumProperty(name="Inference", items=INFERENCE_MODES, default="SUBPROCESS")
    python_path: StringProperty(name="Python", subtype="FILE_PATH",
                                description="Python interpreter with onnxruntime (or onnxruntime-gpu) installed")
    server_url: StringProperty(name="URL", default="http://127.0.0.1:8000",
                               description="Base URL of a KServe v2 server serving the model 'dualpm'")
    server_token: StringProperty(name="Token", subtype="PASSWORD", description="Bearer token of the server")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    model_path: StringProperty(name="Model", subtype="FILE_PATH",
                               description="ONNX model file; empty uses the model shipped with the extension")
    occupancy_threshold: FloatProperty(name="Occupancy", default=0.5, min=0.0, max=1.0,
                                       description="Keep a point when its occupancy is above this")
    confidence_threshold: FloatProperty(name="Confidence", default=2.0, min=1.0, soft_max=20.0,
                                        description="Keep a point when its confidence c = 1 + exp(raw) is at least this")
    start_timeout: FloatProperty(name="Start Timeout", default=60.0, min=1.0, max=600.0, unit="TIME_ABSOLUTE",
                                 description="Seconds to wait for the inference server to be ready")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column(heading="Inference")
        col.prop(self, "inference", text="Runs On")
        if self.inference == "PYTHON":
            col.prop(self, "python_path")
        if self.inference == "REMOTE":
            col.prop(self, "server_url")
            col.prop(self, "server_token")
        else:
            col.prop(self, "device")
            col.prop(self, "model_path")
            col.prop(self, "start_timeout")
        col = layout.column(heading="Points")
        col.prop(self, "occupancy_threshold")
        col.prop(self, "confidence_threshold")


def get(context=None):
    """The preferences, or None when the add-on is registered without an add-on entry (scripts
    that import the package and call register() directly); callers then use the defaults."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def settings_dict(context=None) -> dict:
    """Plain values (the defaults where there are no preferences) for code outside the UI thread."""
    p = get(context)
    keys = ("inference", "python_path", "server_url", "server_token", "device", "model_path",
            "occupancy_threshold", "confidence_threshold", "start_timeout")
    if p is None:
        return {"inference": "SUBPROCESS", "python_path": "", "server_url": "", "server_token": "",
                "device": "auto", "model_path": "", "occupancy_threshold": 0.5, "confidence_threshold": 2.0,
                "start_timeout": 60.0}
    out = {k: getattr(p, k) for k in keys}
    for k in ("python_path", "model_path"):
        out[k] = bpy.path.abspath(out[k]) if out[k] else ""
    return out


classes = (DUALPM_AP_preferences,)


register, unregister = bpy.utils.register_classes_factory(classes)
