"""The clip's parameter layout on the fitting package's chain model (fitting/chain.py).

One ChainModel serves the whole clip: every non-fixed joint is free (a frame's support must not
change which joints can move), fixed joints hold the prior mean (root and Back identity), as the
photo fit does. Its x splits into the shape (global scale, bone-length scales, focal factor,
per-part thickness: one for the clip) and the frame's own pose (root rotation and translation,
joint rotations).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..fitting.chain import ChainModel
from ..fitting.rig import FIXED_BONES, PARTS
from ..rotations import matrix_from_axis_angle, matrix_to_quat, quat_to_axis_angle


def clip_model(ctx) -> ChainModel:
    sk = ctx.skeleton
    free = np.nonzero(~ctx.fixed)[0]
    prior_rot = matrix_from_axis_angle(ctx.prior.mean)
    fixed_rot = np.where(ctx.fixed[:, None, None], prior_rot, np.eye(3))
    fixed_rot[[sk.index(b) for b in FIXED_BONES if b in sk.joint_names] + [0]] = np.eye(3)
    return ChainModel(ctx, free, fixed_rot, photo=True)


def pose_columns(model: ChainModel) -> np.ndarray:
    """Parameters a frame owns: root rotation, translation, joint rotations."""
    return np.concatenate([np.arange(6), np.arange(7, model.col_scale)])


@contextmanager
def pose_only(model: ChainModel):
    """While the clip's solves move the pose alone (tracking, the windows), the chain's Jacobians
    skip the shape's columns, which no such solve reads (ChainModel.pose_only)."""
    held = model.pose_only
    model.pose_only = True
    try:
        yield model
    finally:
        model.pose_only = held


def shape_columns(model: ChainModel) -> np.ndarray:
    """Parameters the clip shares: global scale, bone scales, focal, thickness."""
    return np.setdiff1d(np.arange(model.n_params), pose_columns(model))


def rotation_columns(model: ChainModel) -> np.ndarray:
    return np.arange(7, model.col_scale)


def x_from_fit(model: ChainModel, fit, focal_factor: float) -> np.ndarray:
    """The parameter vector of a SkeletonFit (fitting.fit_to_photo's) on the clip's model;
    focal_factor: the fit's camera over the grid's given one."""
    x = np.zeros(model.n_params)
    m = np.asarray(fit.model_to_camera, dtype=np.float64)
    x[0:3] = quat_to_axis_angle(matrix_to_quat(m[:3, :3]))
    x[3:6] = m[:3, 3]
    x[6] = np.log(fit.global_scale)
    rv = quat_to_axis_angle(np.asarray(fit.rotations, dtype=np.float64))
    x[7:model.col_scale] = rv[model.free].ravel()
    scales = np.log(np.maximum(np.asarray(fit.bone_scales, dtype=np.float64), 1e-6))
    blk = np.zeros(model.n_groups)
    for g in range(model.n_groups):
        blk[g] = scales[np.nonzero(model.groups == g)[0][0]]
    x[model.col_scale:model.col_scale + model.n_groups] = blk
    x[model.col_focal] = np.log(focal_factor)
    thick = (fit.photo or {}).get("thickness", {})
    x[model.col_thick:model.col_thick + model.n_parts] = [np.log(thick.get(name, 1.0)) for name, _ in PARTS]
    return x


def local_quaternions(model: ChainModel, x: np.ndarray) -> np.ndarray:
    return matrix_to_quat(model.local_rotations(x))


def model_to_camera(x: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = matrix_from_axis_angle(x[0:3])
    m[:3, 3] = x[3:6]
    return m


def joints_camera(model: ChainModel, x: np.ndarray) -> np.ndarray:
    rm, _, gt, *_ = model.bones(x)
    return gt @ rm.T + x[3:6]


def rotation_starts(model: ChainModel) -> list[int]:
    """Where each rotation triple of x starts: the root's, then every free joint's."""
    return [0] + [int(c) for c in model.col_rot]


def nearest_equivalent(r: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The rotation vector of the same rotation as r (r + 2 pi k r/|r|) nearest to ref: axis-angle
    jumps by 2 pi where a heading passes half a turn, and a difference across frames must not."""
    theta = float(np.linalg.norm(r))
    if theta < 1e-9:
        return r.copy()
    axis = r / theta
    cands = [axis * (theta + 2 * np.pi * k) for k in (-1, 0, 1)]
    return min(cands, key=lambda c: float(np.linalg.norm(c - ref)))


def unwrap(model: ChainModel, xs: np.ndarray, order=None) -> np.ndarray:
    """xs (T, n_params) with every rotation triple continuous over time (frames in `order`, each
    matched to the one before it)."""
    out = np.array(xs, dtype=np.float64)
    order = range(len(out)) if order is None else list(order)
    prev = None
    for t in order:
        if prev is not None:
            for s in rotation_starts(model):
                out[t, s:s + 3] = nearest_equivalent(out[t, s:s + 3], out[prev, s:s + 3])
        prev = t
    return out
