"""Write per-frame bone rotations into an Action, on Blender 4.2 and on 5.0's slotted actions.

Blender 4.4 introduced slotted (layered) actions and 5.0 removed `Action.fcurves`: there the
F-curves live in a channel bag, action.layers[0].strips[0].channelbag(slot). Blender 4.2 only
has `Action.fcurves`. `_fcurve_factory` picks the one the running Blender has; everything else is
the same: one key per frame on every channel, written with foreach_set, linear interpolation (a
key per frame leaves nothing to interpolate, and Bezier handles would overshoot).
"""

from __future__ import annotations

import bpy
import numpy as np


def is_slotted(action) -> bool:
    return hasattr(action, "slots") and hasattr(action, "layers")


def _fcurve_factory(action, obj):
    """Return new(data_path, index, group) creating F-curves that animate `obj` through `action`."""
    ad = obj.animation_data or obj.animation_data_create()
    if is_slotted(action):
        slot = action.slots.new(id_type="OBJECT", name=obj.name)
        ad.action = action
        ad.action_slot = slot
        layer = action.layers.new("Layer")
        strip = layer.strips.new(type="KEYFRAME")
        bag = strip.channelbag(slot, ensure=True)
        return lambda path, index, group: bag.fcurves.new(path, index=index, group_name=group)
    ad.action = action
    return lambda path, index, group: action.fcurves.new(path, index=index, action_group=group)


def action_fcurves(action, obj=None) -> list:
    """Every F-curve of `action` (for obj's slot where the action is slotted)."""
    if not is_slotted(action):
        return list(action.fcurves)
    out = []
    slot = obj.animation_data.action_slot if obj is not None and obj.animation_data else None
    for layer in action.layers:
        for strip in layer.strips:
            slots = [slot] if slot is not None else list(action.slots)
            for s in slots:
                bag = strip.channelbag(s)
                if bag is not None:
                    out.extend(bag.fcurves)
    return out


def _hemisphere(q: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive quaternions stay on one side (q and -q are the same rotation,
    but F-curves interpolate components and would swing through the long way)."""
    q = np.array(q, dtype=np.float64)
    for f in range(1, len(q)):
        flip = np.sum(q[f] * q[f - 1], axis=-1) < 0
        q[f][flip] *= -1
    return q


def _write(fc, frames: np.ndarray, values: np.ndarray, linear: int) -> None:
    n = len(frames)
    kp = fc.keyframe_points
    kp.add(n)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0] = frames
    co[:, 1] = values
    kp.foreach_set("co", co.ravel())
    kp.foreach_set("interpolation", np.full(n, linear, dtype=np.int32))
    fc.update()


def write_bone_action(arm_obj, joint_names, rotations: np.ndarray, root_translation: np.ndarray | None = None,
                      root_rest_frame: np.ndarray | None = None, frame_start: int = 1, name: str = "DualPM",
                      offsets: np.ndarray | None = None):
    """Key local quaternions (F, J, 4) on every bone and the root's translation (F, 3, model
    space; converted to the root bone's rest frame), one key per frame from frame_start.

    Returns the new action, assigned to the armature (and to a slot of its own on 4.4+).
    """
    rotations = _hemisphere(rotations)
    frames_n = rotations.shape[0]
    frames = frame_start + np.arange(frames_n, dtype=np.float64)
    action = bpy.data.actions.new(name)
    new = _fcurve_factory(action, arm_obj)
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    for j, bone in enumerate(joint_names):
        pb = arm_obj.pose.bones[bone]
        pb.rotation_mode = "QUATERNION"
        path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].rotation_quaternion'
        for i in range(4):
            _write(new(path, i, bone), frames, rotations[:, j, i], linear)
    locations = None
    if offsets is not None:
        locations = np.array(offsets, dtype=np.float64)
    if root_translation is not None:
        if locations is None:
            locations = np.zeros((frames_n, len(joint_names), 3))
        r = np.eye(3) if root_rest_frame is None else np.asarray(root_rest_frame, dtype=np.float64)
        locations[:, 0] += np.asarray(root_translation, dtype=np.float64) @ r  # (R^T t) per frame
    if locations is not None:
        for j, bone in enumerate(joint_names):
            if not np.any(locations[:, j]):
                continue
            path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].location'
            for i in range(3):
                _write(new(path, i, bone), frames, locations[:, j, i], linear)
    action.use_frame_range = True
    action.frame_start = frame_start
    action.frame_end = frame_start + frames_n - 1
    return action


def write_motion(context, arm_obj, rec, motion: str | None, set_scene_range: bool = True) -> dict | None:
    """The photo's pose animated by one of the template's clips (dualpm_addon.idle: the clip's
    motion layered on the fitted pose, its first frame exactly the photo's pose), as the
    armature's action. With `set_scene_range` (the batch files) the action starts at frame 1 and
    the scene's frame range, rate and current frame are set to it; without (the panel, which
    leaves the user's scene settings alone) it starts at the current frame, so what the user sees
    is the photo's pose. None for motion 'none' (or no armature). Returns what NAME.json records."""
    from ._core import core

    if arm_obj is None or not motion or str(motion).lower() == "none":
        return None
    idle = core("idle")
    fit = rec.fit
    m = idle.layered(rec.template, motion, fit.joint_names, fit.rotations,
                     idle.root_scale(rec.template.skeleton, fit.rest_skeleton))
    scene = context.scene
    frame_start = 1 if set_scene_range else int(scene.frame_current)
    action = write_bone_action(arm_obj, m.joint_names, m.rotations, m.root_translation,
                               fit.rest_skeleton.rest_frames[0], frame_start, f"{arm_obj.name} {m.clip}",
                               offsets=m.offsets if np.any(m.offsets) else None)
    if set_scene_range:
        scene.frame_start, scene.frame_end = frame_start, frame_start + m.num_frames - 1
        scene.render.fps, scene.render.fps_base = max(1, int(round(m.fps))), max(1, int(round(m.fps))) / m.fps
        scene.frame_set(frame_start)  # the photo's pose: through the camera, the character on the animal
    arm_obj["dualpm_motion"] = m.clip
    return {"clip": m.clip, "frames": m.num_frames, "fps": m.fps, "action": action.name,
            "frame_range": [frame_start, frame_start + m.num_frames - 1]}
