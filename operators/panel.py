"""The sidebar panel (3D viewport, N panel, "DualPM" tab): photo, mask, Reconstruct with its
progress, retargeting with the editable bone mapping, and export."""

from __future__ import annotations

import bpy

from . import provenance, scene_build


def selected_reconstruction(context):
    """The DualPM collection of the active object (or of a selected one), or None."""
    objs = [context.active_object] + list(getattr(context, "selected_objects", []) or [])
    for obj in objs:
        col = scene_build.reconstruction_of(obj)
        if col is not None:
            return col
    return None


class DUALPM_UL_bone_map(bpy.types.UIList):
    """Rig bone <- BVH joint, with the automatic mapping's confidence; the joint is editable."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        split = row.split(factor=0.4)
        split.label(text=item.target, icon="BONE_DATA")
        sub = split.split(factor=0.75, align=True)
        sub.prop_search(item, "source", context.scene.dualpm, "source_joints", text="")
        conf = sub.row()
        conf.alert = bool(item.source) and item.confidence < 0.5
        conf.label(text=f"{item.confidence:.2f}" if item.source else "-")

    def filter_items(self, context, data, propname):
        items = getattr(data, propname)
        flags = [self.bitflag_filter_item] * len(items)
        if self.filter_name:
            needle = self.filter_name.lower()
            flags = [self.bitflag_filter_item if needle in (i.target + " " + i.source).lower() else 0 for i in items]
        return flags, []


class _DualPMPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DualPM"


class DUALPM_PT_main(_DualPMPanel, bpy.types.Panel):
    bl_label = "Animal from Photo"
    bl_idname = "DUALPM_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.dualpm
        status = context.window_manager.dualpm_status
        col = layout.column()
        col.prop(s, "source", expand=True)
        if s.source == "FILE":
            col.prop(s, "photo_path", text="")
        else:
            col.template_ID(s, "photo_image", open="image.open")
        col.prop(s, "mask_mode")
        if s.mask_mode == "IMAGE":
            col.template_ID(s, "mask_image", open="image.open")
        col.prop(s, "all_animals")
        col.prop(s, "character")
        if s.character == "CHARACTER":
            col.prop(s, "delight")
        col.prop(s, "motion")
        col.prop(s, "point_size")
        col.separator()
        if status.running:
            if hasattr(col, "progress"):
                col.progress(factor=status.progress, type="BAR", text=f"{status.stage.title()}, Esc to cancel")
            else:  # Blender < 4.0 has no progress widget
                col.label(text=f"{status.stage.title()} {status.progress * 100:.0f}%, Esc to cancel")
        else:
            row = col.row()
            row.scale_y = 1.4
            row.operator("dualpm.reconstruct", icon="OUTLINER_OB_ARMATURE")
            col.separator()
            col.prop(s, "video_path", text="")
            sub = col.row(align=True)
            sub.prop(s, "video_start")
            sub.prop(s, "video_end")
            row = col.row()
            row.scale_y = 1.4
            row.operator("dualpm.animate_video", icon="RENDER_ANIMATION")
            if status.message:
                box = col.box()
                box.alert = True
                box.label(text=status.message, icon="ERROR")


class DUALPM_PT_retarget(_DualPMPanel, bpy.types.Panel):
    bl_label = "Retarget Motion"
    bl_parent_id = "DUALPM_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.dualpm
        col_rec = selected_reconstruction(context)
        if col_rec is None:
            layout.label(text="Select a reconstruction", icon="INFO")
        col = layout.column()
        col.prop(s, "bvh_path", text="")
        col.operator("dualpm.map_bones", icon="GROUP_BONE")
        if len(s.bone_map):
            col.template_list("DUALPM_UL_bone_map", "", s, "bone_map", s, "bone_map_index", rows=6)
        col.prop(s, "in_place")
        col.prop(s, "foot_locking")
        col.prop(s, "scale")
        col.prop(s, "frame_start")
        row = col.row(heading="Frames")
        row.prop(s, "use_frame_range", text="")
        sub = row.row(align=True)
        sub.active = s.use_frame_range
        sub.prop(s, "bvh_frame_start")
        sub.prop(s, "bvh_frame_end")
        col.prop(s, "set_scene_range")
        row = col.row()
        row.scale_y = 1.2
        row.operator("dualpm.retarget", icon="ANIM")


class DUALPM_PT_export(_DualPMPanel, bpy.types.Panel):
    bl_label = "Export"
    bl_parent_id = "DUALPM_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        col_rec = selected_reconstruction(context)
        if col_rec is None:
            layout.label(text="Select a reconstruction", icon="INFO")
        else:
            arm = scene_build.armature_of(col_rec)
            info = provenance.read(arm) if arm is not None else {}
            layout.label(text=col_rec.name, icon="OUTLINER_COLLECTION")
            if info.get("dualpm_model_version"):
                layout.label(text=f"Model {info['dualpm_model_version']}")
        layout.operator("dualpm.export_gltf", icon="EXPORT")


classes = (DUALPM_UL_bone_map, DUALPM_PT_main, DUALPM_PT_retarget, DUALPM_PT_export)


register, unregister = bpy.utils.register_classes_factory(classes)
