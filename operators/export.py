"""Export a reconstruction (rig, skinned surface, camera, its action) to glTF with Blender's own
exporter (io_scene_gltf2).

The exporter picks objects by selection; the reconstruction's objects are selected for the call
and the user's selection is put back afterwards, so exporting changes nothing in the scene. The
file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import panel, provenance
from ._core import core, report_error


def export_collection(context, collection, filepath: str, include_points: bool = False,
                      include_camera: bool = True, animations: bool = True) -> str:
    """Write `collection`'s rig, surface (and camera, points) to `filepath` (.glb or .gltf)."""
    err = core("errors").DualPMError
    roles = {"armature", "surface"} | ({"camera"} if include_camera else set()) | ({"points"} if include_points else set())
    objects = [o for o in collection.all_objects if provenance.role(o) in roles]
    if not any(provenance.role(o) == "armature" for o in objects):
        raise err(f"{collection.name}: no DualPM armature to export")
    fmt = "GLTF_SEPARATE" if filepath.lower().endswith(".gltf") else "GLB"
    ext = ".gltf" if fmt == "GLTF_SEPARATE" else ".glb"
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise err(f"{filepath}: the folder {directory} does not exist")
    tmp = filepath[: -len(ext)] + ".partial" + ext if filepath.lower().endswith(ext) else filepath + ".partial" + ext

    view_layer = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    try:
        for o in selected:
            o.select_set(False)
        for o in objects:
            o.select_set(True)
        kwargs = dict(filepath=tmp, export_format=fmt, use_selection=True, export_animations=animations,
                      export_skins=True, export_cameras=include_camera, export_extras=True, export_apply=False,
                      check_existing=False)
        props = bpy.ops.export_scene.gltf.get_rna_type().properties
        if include_points and "use_mesh_vertices" in props:
            kwargs["use_mesh_vertices"] = True  # loose vertices as POINTS primitives
        if "export_gn_mesh" in props:
            kwargs["export_gn_mesh"] = False
        if "export_force_sampling" in props:
            # The actions hold a linear key on every frame: written as they are, not sampled again
            # frame by frame through the depsgraph (0.16 against 0.61 s for an 80-frame action of
            # 46 bones; the same poses after Blender's importer, tests/test_idle.py).
            kwargs["export_force_sampling"] = False
        result = bpy.ops.export_scene.gltf(**{k: v for k, v in kwargs.items() if k in props})
    except RuntimeError as e:
        _remove(tmp)
        raise err(f"{os.path.basename(filepath)}: glTF export failed ({str(e).strip().splitlines()[-1]})") from None
    finally:
        for o in objects:
            try:
                o.select_set(False)
            except ReferenceError:
                pass
        for o in selected:
            o.select_set(True)
        view_layer.objects.active = active
    if result != {"FINISHED"} or not os.path.isfile(tmp):
        _remove(tmp)
        raise err(f"{os.path.basename(filepath)}: glTF export did not finish")
    os.replace(tmp, filepath)
    if fmt == "GLTF_SEPARATE":  # the .bin sits beside it under the temporary stem
        stem_tmp, stem = os.path.splitext(tmp)[0], os.path.splitext(filepath)[0]
        if os.path.isfile(stem_tmp + ".bin"):
            os.replace(stem_tmp + ".bin", stem + ".bin")
    return filepath


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class DUALPM_OT_export_gltf(bpy.types.Operator, ExportHelper):
    """Export the selected reconstruction (rig, skinned surface, camera, animation) to glTF"""

    bl_idname = "dualpm.export_gltf"
    bl_label = "Export glTF"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb;*.gltf", options={"HIDDEN"})
    include_points: BoolProperty(name="Point Cloud", default=False,
                                 description="Also export the point cloud (as glTF points)")
    include_camera: BoolProperty(name="Camera", default=True)
    animations: BoolProperty(name="Animation", default=True)

    @classmethod
    def poll(cls, context):
        if panel.selected_reconstruction(context) is None:
            cls.poll_message_set("Select an object of a DualPM reconstruction")
            return False
        return True

    def invoke(self, context, event):
        col = panel.selected_reconstruction(context)
        if col is not None and not self.filepath:
            self.filepath = bpy.path.clean_name(col.name) + self.filename_ext
        return ExportHelper.invoke(self, context, event)

    def execute(self, context):
        try:
            col = panel.selected_reconstruction(context)
            if col is None:
                raise core("errors").DualPMError("select an object of a DualPM reconstruction to export")
            path = export_collection(context, col, self.filepath, self.include_points, self.include_camera,
                                     self.animations)
        except Exception as e:  # noqa: BLE001 - one line in the UI, the traceback in the console
            report_error(self, e, "while exporting glTF")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {os.path.basename(path)}")
        return {"FINISHED"}


classes = (DUALPM_OT_export_gltf,)


register, unregister = bpy.utils.register_classes_factory(classes)
