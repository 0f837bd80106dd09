"""Armatures from the core's Skeleton, poses, and skinning through vertex groups.

Bones are built from the rest frames exactly (EditBone.matrix carries head, axes and roll), so
Blender's pose evaluation equals dualpm_addon.skeleton.forward_kinematics: a pose bone's
rotation_quaternion is the local rotation q_j, its location the local head offset (for the root,
the translation expressed in the root's rest frame).
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix


def _matrix(m: np.ndarray) -> Matrix:
    return Matrix([list(map(float, row)) for row in np.asarray(m)])


def _enter_edit_mode_alone(context, obj) -> None:
    """Make `obj` the only selected object and edit it.

    Edit mode takes every selected object of the same type with it, so the user's own armatures
    are deselected first: that way no bone of theirs passes through edit mode.
    """
    view_layer = context.view_layer
    for o in list(context.selected_objects):
        o.select_set(False)
    view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")


def new_armature(context, name: str, skeleton, collection):
    """An armature object in `collection` with one bone per joint in the skeleton's rest pose."""
    arm = bpy.data.armatures.new(name)
    arm.display_type = "OCTAHEDRAL"
    obj = bpy.data.objects.new(name, arm)
    obj.show_in_front = True  # the bones stay visible inside the point cloud
    collection.objects.link(obj)
    rest = skeleton.rest_matrices
    lengths = np.maximum(skeleton.bone_lengths, 1e-4)  # Blender drops zero-length bones
    _enter_edit_mode_alone(context, obj)
    try:
        bones = []
        for j, bone_name in enumerate(skeleton.joint_names):
            eb = arm.edit_bones.new(bone_name)
            eb.head = (0.0, 0.0, 0.0)
            eb.tail = (0.0, float(lengths[j]), 0.0)
            eb.matrix = _matrix(rest[j])
            eb.use_deform = True
            bones.append(eb)
        for j, p in enumerate(skeleton.parents):
            if p >= 0:
                bones[j].parent = bones[int(p)]
                bones[j].use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj


def set_pose(arm_obj, skeleton, rotations: np.ndarray, root_translation=None, offsets=None) -> None:
    """Local quaternions (J, 4) w x y z; root translation (3,) in model space; offsets (J, 3)."""
    rotations = np.asarray(rotations, dtype=np.float64)
    locations = np.zeros((skeleton.num_joints, 3)) if offsets is None else np.array(offsets, dtype=np.float64)
    if root_translation is not None:
        locations[0] = locations[0] + skeleton.rest_frames[0].T @ np.asarray(root_translation, dtype=np.float64)
    pose = arm_obj.pose.bones
    for j, name in enumerate(skeleton.joint_names):
        pb = pose[name]
        pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = rotations[j].tolist()
        pb.location = locations[j].tolist()


def posed_matrices(arm_obj, joint_names) -> np.ndarray:
    """(J, 4, 4) evaluated pose-bone matrices in armature space, in the order of joint_names
    (Blender lists bones depth-first, which is not the skeleton's order)."""
    pose = arm_obj.pose.bones
    return np.array([np.array(pose[n].matrix) for n in joint_names])


def assign_skin(obj, joint_names, skin_joints: np.ndarray, skin_weights: np.ndarray,
                resolution: int = 4096) -> None:
    """One vertex group per joint, weights from the sparse (V, K) form.

    VertexGroup.add takes one weight for a list of vertices, so the weights are quantised to
    1/resolution and each (group, weight) pair is added once; Blender's Armature modifier
    normalises by the total weight, so the rounding moves a point by at most 1/resolution of a
    bone's displacement. Zero weights are skipped.
    """
    groups = [obj.vertex_groups.new(name=n) for n in joint_names]
    skin_joints = np.asarray(skin_joints, dtype=np.int64)
    q = np.rint(np.asarray(skin_weights, dtype=np.float64) * resolution).astype(np.int64)
    idx = np.repeat(np.arange(skin_joints.shape[0]), skin_joints.shape[1])
    key = skin_joints.ravel() * (resolution + 1) + q.ravel()
    keep = q.ravel() > 0
    idx, key = idx[keep], key[keep]
    order = np.argsort(key, kind="stable")
    idx, key = idx[order], key[order]
    uniq, starts = np.unique(key, return_index=True)
    ends = np.append(starts[1:], len(key))
    for k, s, e in zip(uniq.tolist(), starts.tolist(), ends.tolist()):
        groups[k // (resolution + 1)].add(idx[s:e].tolist(), (k % (resolution + 1)) / resolution, "REPLACE")


def bind_to_armature(obj, arm_obj):
    """Parent `obj` to the armature and deform it with an Armature modifier.

    Call it before adding other modifiers: the point display must come after the deformation.
    """
    obj.parent = arm_obj
    obj.matrix_parent_inverse = arm_obj.matrix_world.inverted()
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm_obj
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False  # plain linear blend skinning, as in the core
    return mod


def evaluated_positions(context, obj) -> np.ndarray:
    """World-space vertex positions of obj after its modifiers (the depsgraph's result)."""
    depsgraph = context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        ev.to_mesh_clear()
    m = np.array(obj.matrix_world)
    return co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
