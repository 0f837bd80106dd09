"""A fitted clip (video.fit.ClipFit) as the animal's motion in one world: the form every output
takes (the .blend's action, the .glb's animation, the .bvh).

The clip fit places the animal in each frame's camera (model_to_camera, OpenCV). The outputs need
one fixed world: here it is the animal's model space in the clip's first frame (Z up, the animal
facing -Y at the origin, as in the photo path), and the camera stays where it stood then
(world_from_cv = inverse of the first frame's model_to_camera). Everything that moves, the
animal's own motion and the camera's (a pan moves the root: one video cannot tell them apart),
goes into the root bone, so the legs keep only their own motion:

    A_t = M_0^-1 M_t                  the animal's placement at frame t in the world
    R(q'_root) = B^T R_A B R(q_root)  (B: the root's rest frame)
    t'_t = R_A (b + t_root) + t_A - b (b: the root's rest head)

which is exactly A_t applied to the root's posed frame (skeleton.py: G_root = T(t) B R(q)), so
forward kinematics of (q', t') gives A_t times each frame's posed skeleton: joint positions in the
world are M_0^-1 times the camera-space joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rotations import matrix_to_quat, quat_to_matrix


@dataclass
class WorldMotion:
    """rotations (T, J, 4) local quaternions (the root's carrying the placement), root_translation
    (T, 3) model space, world_from_cv (4, 4) the camera's fixed pose, fps."""

    rotations: np.ndarray
    root_translation: np.ndarray
    world_from_cv: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(len(self.rotations))


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def world_motion(clip, fps: float, root_translation: np.ndarray | None = None) -> WorldMotion:
    """The clip's motion in the world of its first frame (module docstring)."""
    sk = clip.rest_skeleton
    m2c = np.asarray(clip.model_to_camera, np.float64)
    rot = np.array(clip.rotations, np.float64)
    n = len(rot)
    t_root = np.zeros((n, 3)) if root_translation is None else np.asarray(root_translation, np.float64)
    world_from_cv = rigid_inverse(m2c[0])
    a = world_from_cv[None] @ m2c  # (T, 4, 4)
    b_rot = np.asarray(sk.rest_frames[0], np.float64)
    b_head = np.asarray(sk.rest_heads[0], np.float64)
    r_root = quat_to_matrix(rot[:, 0])
    r_new = b_rot.T[None] @ a[:, :3, :3] @ b_rot[None] @ r_root
    rot[:, 0] = matrix_to_quat(r_new)
    trans = np.einsum("tij,tj->ti", a[:, :3, :3], b_head[None] + t_root) + a[:, :3, 3] - b_head
    return WorldMotion(rotations=rot, root_translation=trans, world_from_cv=world_from_cv, fps=float(fps))


def joints_world(clip, motion: WorldMotion) -> np.ndarray:
    """(T, J, 3) joint heads in the world by forward kinematics of the world motion."""
    g = clip.rest_skeleton.forward_kinematics(motion.rotations, motion.root_translation)
    return g[..., :3, 3]


def to_bvh(clip, motion: WorldMotion):
    """bvh.Motion of the animal on its own fitted skeleton, in metres, one BVH frame per clip frame."""
    from .. import bvh

    return bvh.from_skeleton_pose(clip.rest_skeleton, motion.rotations, motion.root_translation,
                                  frame_time=1.0 / motion.fps)


def glb_bytes(clip, motion: WorldMotion, name: str = "dualpm") -> bytes:
    """An animated .glb: the fitted rig, the skinned surface at its rest shape, the clip's motion."""
    from .. import gltf_write

    return gltf_write.build_glb(clip.rest_skeleton, rotations=motion.rotations,
                                root_translation=motion.root_translation, fps=motion.fps,
                                vertices=clip.rest_vertices, faces=clip.faces, skin_joints=clip.skin_joints,
                                skin_weights=clip.skin_weights, name=name, animation_name=f"{name} motion")
