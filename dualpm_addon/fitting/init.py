"""Where a solve starts: a robust similarity on the trunk places and sizes the animal, robust
per-bone Kabsch gives each bone's rotation, turned into local rotations down the chain."""

from __future__ import annotations

import numpy as np

from .rig import FitContext


def local_rotations_from_kabsch(ctx: FitContext, rk, ok, r0, free, fixed_rot, prior_rot) -> np.ndarray:
    """Local rotations (J, 3, 3) from per-bone Kabsch rotations rk (J, 3, 3), walked down the chain.

    Bone k's Kabsch rotation takes its points' rest positions (s0 Q) onto P; its posed
    model-space frame is then r0^T R_k B_k, and its local rotation is what turns the parent's
    posed frame (times the rest offset) into it. Bones whose Kabsch is ill-posed (`ok` False:
    fewer than 4 points, or nearly collinear ones) start at the prior mean.
    """
    sk = ctx.skeleton
    nj = sk.num_joints
    is_free = np.zeros(nj, dtype=bool)
    is_free[free] = True
    target = np.einsum("ab,jbc,jcd->jad", r0.T, rk, sk.rest_frames)  # posed model frames
    gr = np.empty((nj, 3, 3))
    local = fixed_rot.copy()
    for j in range(nj):
        pred = ctx.lr_rot[0] if j == 0 else gr[sk.parents[j]] @ ctx.lr_rot[j]
        if is_free[j]:
            local[j] = pred.T @ target[j] if ok[j] else prior_rot[j]
        gr[j] = pred @ local[j]
    return local
