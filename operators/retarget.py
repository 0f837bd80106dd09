"""Retarget BVH motion capture onto a reconstruction's armature.

Two operators: Map Bones reads the BVH and fills the panel's list with the automatic mapping
(dualpm_addon.bone_map: by name and by structure, a confidence per pair), which the artist may
edit; Retarget runs dualpm_addon.retarget with that mapping and the panel's options and writes
one key per BVH frame on every mapped bone (operators/animation.py: Action.fcurves on 4.2,
slotted actions and channel bags on 4.4+/5.0).
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import animation, panel, scene_build
from ._core import core, report_error


def rig_skeleton(arm_obj):
    """The armature's rest skeleton as the core's Skeleton (armature space, bone order parents
    first as Blender lists them)."""
    bones = list(arm_obj.data.bones)
    names = tuple(b.name for b in bones)
    index = {n: i for i, n in enumerate(names)}
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in bones], dtype=np.int64)
    roots = np.nonzero(parents < 0)[0]
    if len(roots) != 1 or roots[0] != 0:
        raise core("errors").DualPMError(f"{arm_obj.name}: the armature must have exactly one root bone")
    heads = np.array([b.head_local for b in bones], dtype=np.float64)
    tails = np.array([b.tail_local for b in bones], dtype=np.float64)
    frames = np.array([np.array(b.matrix_local)[:3, :3] for b in bones], dtype=np.float64)
    return core("skeleton").Skeleton(names, parents, heads, tails, frames)


def selected_armature(context):
    col = panel.selected_reconstruction(context)
    arm = scene_build.armature_of(col) if col is not None else None
    if arm is None:
        obj = context.active_object
        arm = obj if obj is not None and obj.type == "ARMATURE" else None
    if arm is None:
        raise core("errors").DualPMError("select a DualPM reconstruction (or an armature) to retarget onto")
    return arm


def read_motion(path: str, frame_range=None):
    err = core("errors").DualPMError
    path = bpy.path.abspath(path) if path else ""
    if not path or not os.path.isfile(path):
        raise err(f"{path or 'no BVH chosen'}: no such file")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        motion = core("bvh").read(path)
    notes = [str(w.message) for w in caught]
    if frame_range is not None:
        a, b = int(frame_range[0]), int(frame_range[1])
        if a < 1 or b < a or a > motion.num_frames:
            raise err(f"{os.path.basename(path)}: frames {a}-{b} are outside 1-{motion.num_frames}")
        motion = motion.frames(a - 1, min(b, motion.num_frames))
    return motion, notes


def auto_mapping(motion, skeleton):
    bm = core("bone_map")
    return bm.auto_map(bm.Rig.from_motion(motion), bm.Rig.from_skeleton(skeleton))


def mapping_from_pairs(pairs: dict, motion, skeleton):
    """A BoneMap from {target: (source or "", confidence, how)} (the panel's edited list)."""
    bm = core("bone_map")
    err = core("errors").DualPMError
    out = bm.BoneMap()
    used = {}
    for target, (source, confidence, how) in pairs.items():
        if not source:
            continue
        if target not in skeleton.joint_names:
            raise err(f"bone map: the rig has no bone {target!r}")
        if source not in motion.joint_names:
            raise err(f"bone map: the BVH has no joint {source!r} (for {target})")
        if source in used:
            raise err(f"bone map: BVH joint {source!r} drives both {used[source]} and {target}; pick one")
        used[source] = target
        out.pairs[target] = (source, float(confidence), how or "edited")
    if not out.pairs:
        raise err("bone map: no bone is mapped")
    return out


def retarget_armature(context, arm_obj, bvh_path: str, pairs: dict | None = None, in_place: bool = False,
                      foot_locking: bool = True, frame_range=None, scale: float = 1.0, frame_start: int = 1,
                      set_scene_range: bool = True) -> dict:
    """Retarget `bvh_path` onto the armature; returns a summary (frames, mapped bones, notes).

    `scale` multiplies the root's motion on top of the automatic leg-length ratio."""
    motion, notes = read_motion(bvh_path, frame_range)
    skeleton = rig_skeleton(arm_obj)
    bone_map = auto_mapping(motion, skeleton) if pairs is None else mapping_from_pairs(pairs, motion, skeleton)
    result = core("retarget").retarget(motion, skeleton, bone_map, in_place=in_place, foot_lock=foot_locking)
    rotations = np.asarray(result.rotations, dtype=np.float64)
    root_t = np.asarray(result.root_translation, dtype=np.float64) * float(scale)
    offsets = np.asarray(result.offsets, dtype=np.float64) * float(scale)
    name = f"{arm_obj.name} {os.path.splitext(os.path.basename(bvh_path))[0]}"
    action = animation.write_bone_action(arm_obj, skeleton.joint_names, rotations, root_t,
                                         skeleton.rest_frames[0], frame_start, name,
                                         offsets=offsets if np.any(offsets) else None)
    frames = rotations.shape[0]
    if set_scene_range:
        scene = context.scene
        scene.frame_start, scene.frame_end = frame_start, frame_start + frames - 1
        fps = motion.fps
        if fps > 0:
            scene.render.fps, scene.render.fps_base = max(1, int(round(fps))), max(1, int(round(fps))) / fps
    arm_obj["dualpm_motion"] = os.path.basename(bvh_path)
    contacts = {k: int(np.sum(v)) for k, v in (result.contacts or {}).items()}
    return {"bvh": os.path.basename(bvh_path), "frames": frames, "fps": round(float(motion.fps), 3),
            "mapped_bones": len(bone_map.pairs), "action": action.name, "notes": notes,
            "frame_range": [frame_start, frame_start + frames - 1], "root_scale": round(float(result.scale), 5),
            "contact_frames": contacts}


def _report_error(op, e):
    report_error(op, e, "while retargeting")
    return {"CANCELLED"}


class DUALPM_OT_map_bones(bpy.types.Operator):
    """Read the BVH and map its joints onto the selected reconstruction's bones (editable list)"""

    bl_idname = "dualpm.map_bones"
    bl_label = "Map Bones"
    bl_options = {"REGISTER", "UNDO"}  # it rewrites the scene's mapping list

    def execute(self, context):
        s = context.scene.dualpm
        try:
            arm = selected_armature(context)
            motion, notes = read_motion(s.bvh_path)
            skeleton = rig_skeleton(arm)
            bone_map = auto_mapping(motion, skeleton)
        except Exception as e:  # noqa: BLE001
            return _report_error(self, e)
        s.bone_map.clear()
        for name in skeleton.joint_names:
            row = s.bone_map.add()
            row.target = name
            pair = bone_map.pairs.get(name)
            if pair:
                row.source, row.confidence, row.method = pair[0], pair[1], pair[2]
        s.source_joints.clear()
        for j in motion.joint_names:
            s.source_joints.add().name = j
        s.bone_map_bvh = bpy.path.abspath(s.bvh_path)
        s.bvh_frame_end = max(s.bvh_frame_end if s.use_frame_range else motion.num_frames, 1)
        for n in notes:
            self.report({"WARNING"}, n)
        self.report({"INFO"}, f"Mapped {len(bone_map.pairs)} of {len(skeleton.joint_names)} bones "
                               f"from {motion.num_joints} BVH joints")
        return {"FINISHED"}


class DUALPM_OT_retarget(bpy.types.Operator):
    """Retarget the BVH onto the selected reconstruction: one key per frame on every mapped bone"""

    bl_idname = "dualpm.retarget"
    bl_label = "Retarget BVH"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if context.mode not in ("OBJECT", "POSE"):
            cls.poll_message_set("Switch to Object or Pose Mode first")
            return False
        return True

    def execute(self, context):
        s = context.scene.dualpm
        try:
            arm = selected_armature(context)
            pairs = None
            if len(s.bone_map) and s.bone_map_bvh == bpy.path.abspath(s.bvh_path):
                pairs = {r.target: (r.source, r.confidence, r.method) for r in s.bone_map}
            info = retarget_armature(
                context, arm, s.bvh_path, pairs=pairs, in_place=s.in_place, foot_locking=s.foot_locking,
                frame_range=(s.bvh_frame_start, s.bvh_frame_end) if s.use_frame_range else None,
                scale=s.scale, frame_start=s.frame_start, set_scene_range=s.set_scene_range)
        except Exception as e:  # noqa: BLE001
            return _report_error(self, e)
        for n in info["notes"]:
            self.report({"WARNING"}, n)
        self.report({"INFO"}, f"Retargeted {info['frames']} frames onto {info['mapped_bones']} bones")
        return {"FINISHED"}


classes = (DUALPM_OT_map_bones, DUALPM_OT_retarget)


register, unregister = bpy.utils.register_classes_factory(classes)
