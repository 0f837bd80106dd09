"""Panel inputs (saved with the scene) and the running job's status (window manager, not saved)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)


class DUALPM_PG_bone_pair(bpy.types.PropertyGroup):
    """One row of the bone mapping: a bone of the rig and the BVH joint that drives it."""

    target: StringProperty(name="Bone", description="Bone of the reconstructed rig")
    source: StringProperty(name="BVH Joint", description="BVH joint that drives the bone; empty: not driven")
    confidence: FloatProperty(name="Confidence", min=0.0, max=1.0, precision=2,
                              description="How sure the automatic mapping is of this pair")
    method: StringProperty(name="Found By", description="How the automatic mapping found the pair")


class DUALPM_PG_name(bpy.types.PropertyGroup):
    pass  # `name` only: the BVH's joints, for the mapping list's search field


class DUALPM_PG_settings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Photo From", items=[
        ("FILE", "File", "A photo file on disk"),
        ("IMAGE", "Image", "An image already loaded in Blender"),
    ], default="FILE")
    photo_path: StringProperty(name="Photo", subtype="FILE_PATH", description="Photo of a four-legged animal")
    photo_image: PointerProperty(name="Image", type=bpy.types.Image)
    mask_mode: EnumProperty(name="Mask", items=[
        ("NONE", "None", "The model finds the animal by itself"),
        ("ALPHA", "Alpha", "The photo's alpha channel marks the animal"),
        ("IMAGE", "Image", "A second image marks the animal (white or opaque)"),
    ], default="NONE")
    mask_image: PointerProperty(name="Mask Image", type=bpy.types.Image)
    all_animals: BoolProperty(name="All Animals", default=False,
                              description="Reconstruct every animal found in the photo, one collection each "
                                          "(off: only the largest)")
    character: EnumProperty(name="Surface", items=[
        ("CHARACTER", "Character", "The animal's own character: the photo's colours baked on a subdivided, "
                                   "UV-mapped mesh"),
        ("TEMPLATE", "Template", "The template's mesh with its flat colours"),
        ("POINTS", "Points Only", "No surface: the point cloud and the rig"),
    ], default="CHARACTER", description="What the reconstruction's surface is")
    delight: EnumProperty(name="Light", items=[
        ("AUTO", "Auto", "Take the photo's light (sky, sun, cast shadows) out of the character's texture where "
                         "the photo shows a directional light"),
        ("ON", "Remove", "Always take the photo's fitted light out of the texture"),
        ("OFF", "Keep", "The photo's colours as they are, light included"),
    ], default="AUTO", description="The photo's light in the character's texture")
    motion: EnumProperty(name="Motion", items=[
        ("IDLE", "Idle", "The template's idle clip (breathing, head and tail) layered on the photo's pose"),
        ("WALK", "Walk", "The template's walk cycle layered on the photo's pose"),
        ("GALLOP", "Gallop", "The template's gallop cycle layered on the photo's pose"),
        ("EATING", "Eating", "The template's grazing clip layered on the photo's pose"),
        ("NONE", "None", "No action: the rig holds the photo's pose"),
    ], default="IDLE", description="The reconstruction's action; its first frame is the photo's pose")
    video_path: StringProperty(name="Video", subtype="FILE_PATH",
                               description="Video of a four-legged animal (mp4, mov, webm, mkv) or a folder of frames")
    video_start: FloatProperty(name="Start", default=0.0, min=0.0, unit="TIME_ABSOLUTE",
                               description="First second of the video to animate from")
    video_end: FloatProperty(name="End", default=0.0, min=0.0, unit="TIME_ABSOLUTE",
                             description="Last second of the video to animate from (0: its end)")
    point_size: FloatProperty(name="Point Size", default=0.006, min=0.0, soft_max=0.05, unit="LENGTH",
                              description="Diameter of the displayed points (also on the modifier)")

    # Retargeting
    bvh_path: StringProperty(name="BVH", subtype="FILE_PATH", description="Motion capture file")
    bone_map: CollectionProperty(type=DUALPM_PG_bone_pair)
    bone_map_index: IntProperty()
    bone_map_bvh: StringProperty(description="The BVH file the mapping was made for")
    source_joints: CollectionProperty(type=DUALPM_PG_name)
    in_place: BoolProperty(name="In Place", default=False, description="Remove the root's travel (keep its height)")
    foot_locking: BoolProperty(name="Foot Locking", default=True,
                               description="Hold feet still during detected ground contacts (two-bone IK)")
    use_frame_range: BoolProperty(name="Frame Range", default=False, description="Use only part of the BVH")
    bvh_frame_start: IntProperty(name="Start", default=1, min=1, description="First BVH frame (1-based)")
    bvh_frame_end: IntProperty(name="End", default=250, min=1, description="Last BVH frame (1-based)")
    scale: FloatProperty(name="Root Motion Scale", default=1.0, min=0.0, soft_max=10.0,
                         description="Multiplies the root's motion (1: scaled by the ratio of leg lengths)")
    frame_start: IntProperty(name="Start Frame", default=1, description="Scene frame of the first key")
    set_scene_range: BoolProperty(name="Set Scene Frame Range", default=True,
                                  description="Make the scene's frame range the action's")


class DUALPM_PG_status(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    stage: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")


classes = (DUALPM_PG_bone_pair, DUALPM_PG_name, DUALPM_PG_settings, DUALPM_PG_status)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    bpy.types.Scene.dualpm = PointerProperty(type=DUALPM_PG_settings)
    bpy.types.WindowManager.dualpm_status = PointerProperty(type=DUALPM_PG_status)


def unregister():
    del bpy.types.WindowManager.dualpm_status
    del bpy.types.Scene.dualpm
    _unregister_classes()
