"""What a fit returns: the fitted rig (SkeletonFit), its bone flags, and the step that turns a
solved parameter vector into it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import correspondence as corr
from ..errors import DualPMError
from ..rotations import matrix_to_quat
from ..skinning import linear_blend_skinning
from .align import group_median
from .rig import instance_rest_points, mirror_unsupported, scaled_rest_skeleton

# Bone flags (bit mask per bone in SkeletonFit.flags).
FLAG_NO_SUPPORT = 1  # no matched points on the bone or below it: prior-mean or mirrored pose
FLAG_WEAK_SUPPORT = 2  # fewer than min_support points on the bone itself: leans on the prior
FLAG_HIGH_RESIDUAL = 4  # its points sit far from the fitted surface (median > 3 % body length)
FLAG_NAMES = {FLAG_NO_SUPPORT: "no_support", FLAG_WEAK_SUPPORT: "weak_support",
              FLAG_HIGH_RESIDUAL: "high_residual"}
HIGH_RESIDUAL = 0.03  # fraction of body length


def flag_names(bits: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if int(bits) & bit]


@dataclass
class SkeletonFit:
    """A fitted rig, all numpy. J joints of the reference skeleton, V mesh vertices, N input
    points. Frames: see the fitting package's docstring.

    rest_skeleton: Skeleton, the instance's rest skeleton in model space (scaled template).
    rotations (J, 4) local quaternions w, x, y, z; root_translation (3,) zeros (M places the root).
    model_to_camera (4, 4) rigid M; global_scale (float); bone_scales (J,) length scales.
    joints (J, 3) posed heads in camera space; tails (J, 3) posed tails in camera space;
    posed_frames (J, 4, 4) posed bone frames in camera space (M @ G).
    point_valid (N,) bool matched points; point_skin_joints (N, 4), point_skin_weights (N, 4)
    (with point_weights off: only the matched subset, the others invalid with joint 0).
    bone_support (J,) matched points per dominant bone (of the max_matched subset);
    bone_residual (J,) median distance (m) of each bone's fitted points to the model (NaN: none);
    flags (J,) bit mask (FLAG_*; `bone_flags()` names them).
    rest_vertices (V, 3) the instance's rest mesh (model space); posed_vertices (V, 3) camera
    space; faces (F, 3); skin_joints (V, 4), skin_weights (V, 4). Skinning rest_vertices with
    rest_skeleton and rotations, then applying M, gives posed_vertices exactly (a surface pull
    is folded into rest_vertices through each vertex's inverse skinning transform).
    residual_rms, residual_median (m) over the solver's points; inlier_fraction (< 3 f_scale);
    match_fraction: share of the matched subset whose Q was kept; points_used by the solver;
    body_length (m) of the instance's rest mesh; cost, nfev, converged: the solver's;
    timings (s) per stage. thickness (J,) each bone's thickness scale (its body part's; 1 for
    fits without the photo); intrinsics (3, 3) the solved camera of the grid the fit worked in
    (None: the caller's); photo: the photo fit's figures (hypothesis kept, cost per term, ...).
    """

    joint_names: tuple[str, ...]
    parents: np.ndarray
    rest_skeleton: Skeleton
    rotations: np.ndarray
    root_translation: np.ndarray
    model_to_camera: np.ndarray
    global_scale: float
    bone_scales: np.ndarray
    joints: np.ndarray
    tails: np.ndarray
    posed_frames: np.ndarray
    point_valid: np.ndarray
    point_skin_joints: np.ndarray
    point_skin_weights: np.ndarray
    bone_support: np.ndarray
    bone_residual: np.ndarray
    flags: np.ndarray
    rest_vertices: np.ndarray
    posed_vertices: np.ndarray
    faces: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    residual_rms: float
    residual_median: float
    inlier_fraction: float
    match_fraction: float
    points_used: int
    body_length: float
    cost: float
    nfev: int
    converged: bool
    timings: dict = field(default_factory=dict)
    thickness: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    photo: dict = field(default_factory=dict)

    def bone_flags(self) -> dict[str, list[str]]:
        return {n: flag_names(f) for n, f in zip(self.joint_names, self.flags) if f}


def build(ctx, model, x, fp: dict, support, flags, no_support, match_fraction, options, sol, q_all, sub,
          m_sub, timings) -> SkeletonFit:
    """The SkeletonFit of solution x: posed skeleton, instance rest mesh and posed mesh, residuals
    of the solver's 3D points fp (dict: P observed, Q, camera fitted, joint their first skin
    bone), per-point skin weights of every input point q_all (sub, m_sub: the matched subset and
    its correspondence, used when options.point_weights is off)."""
    template, sk = ctx.template, ctx.skeleton
    nj = sk.num_joints
    rm, gr, gt, sg, scales, thick = model.bones(x)
    local = model.local_rotations(x)
    if options.unsupported == "mirror":
        # Unsupported bones carry no data, so setting them after the solve changes nothing else.
        local = mirror_unsupported(sk, local, no_support)
    elif options.unsupported != "prior":
        raise DualPMError(f"fit: unknown unsupported-bone policy {options.unsupported!r}; one of mirror, prior")
    quats = matrix_to_quat(local)
    rest = scaled_rest_skeleton(sk, sg, scales)
    mcam = np.eye(4)
    mcam[:3, :3], mcam[:3, 3] = rm, x[3:6]
    g = rest.forward_kinematics(quats)
    posed = mcam @ g
    rest_v = instance_rest_points(sk, template.vertices, template.skin_joints, template.skin_weights, sg, scales,
                                  instance=rest, thickness=thick)
    blen = float(np.ptp(rest_v[:, 1]))
    res = np.linalg.norm(fp["camera"] - fp["P"], axis=1)
    bone_res = group_median(res, fp["joint"], nj)
    flags = flags | np.where(np.nan_to_num(bone_res, nan=0.0) > HIGH_RESIDUAL * blen, FLAG_HIGH_RESIDUAL, 0)
    smat = rest.skinning_matrices(g)
    posed_v = linear_blend_skinning(rest_v, template.skin_joints, template.skin_weights, smat) @ rm.T + x[3:6]
    close = res < 3 * options.f_scale * blen
    if options.surface_pull > 0:
        from .surface import pull_surface

        rest_v, posed_v = pull_surface(template, rest_v, posed_v, smat, rm, fp["Q"], fp["P"] - fp["camera"], close,
                                       options)
    n = len(q_all)
    if options.point_weights:
        mall = corr.match(ctx.index, q_all, k=1)
        pv, psj, psw = mall.valid, mall.skin_joints, mall.skin_weights
    else:
        pv, psj, psw = np.zeros(n, dtype=bool), np.zeros((n, 4), dtype=np.int64), np.zeros((n, 4))
        psw[:, 0] = 1
        pv[sub], psj[sub], psw[sub] = m_sub.valid, m_sub.skin_joints, m_sub.skin_weights
    return SkeletonFit(
        joint_names=tuple(sk.joint_names), parents=np.asarray(sk.parents).copy(), rest_skeleton=rest,
        rotations=quats, root_translation=np.zeros(3), model_to_camera=mcam, global_scale=float(sg),
        bone_scales=scales, joints=posed[:, :3, 3], tails=rest.posed_tails(posed), posed_frames=posed,
        point_valid=pv, point_skin_joints=psj, point_skin_weights=psw, bone_support=support,
        bone_residual=bone_res, flags=flags.astype(np.int64), rest_vertices=rest_v, posed_vertices=posed_v,
        faces=np.asarray(template.faces).copy(), skin_joints=np.asarray(template.skin_joints).copy(),
        skin_weights=np.asarray(template.skin_weights).copy(), residual_rms=float(np.sqrt(np.mean(res**2))),
        residual_median=float(np.median(res)), inlier_fraction=float(np.mean(close)),
        match_fraction=float(match_fraction), points_used=int(len(res)), body_length=blen,
        cost=sol.cost, nfev=sol.nfev, converged=sol.converged, timings=timings, thickness=thick)
