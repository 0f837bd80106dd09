"""Baseline: the reference code's per-bone Kabsch, without a kinematic chain."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .align import grouped_kabsch, robust_similarity
from .blas import single_threaded_blas
from .fit import FitOptions
from .rig import FitContext, prepare
from .support import check_points, match_subset


@dataclass
class KabschBaseline:
    """Per-bone Kabsch without a kinematic chain (the reference code's method).

    joints (J, 3) camera-space heads, each carried by its own bone's rigid transform (bones with
    fewer than 3 points, or collinear ones, use their parent's); transforms (J, 4, 4) from the
    scaled template's model space to camera space; global_scale from a robust similarity over
    all matched points (the reference works in normalised units; this keeps species of other
    sizes comparable); fitted (J,) bones with their own transform; seconds taken.
    """

    joints: np.ndarray
    transforms: np.ndarray
    global_scale: float
    fitted: np.ndarray
    seconds: float


def fit_kabsch_baseline(p: np.ndarray, q: np.ndarray, context: FitContext | None = None,
                        options: FitOptions | None = None) -> KabschBaseline:
    """The baseline on the same matched subset as `fit` (same options and seed)."""
    with single_threaded_blas():
        return _fit_kabsch_baseline(p, q, context, options)


def _fit_kabsch_baseline(p, q, context, options) -> KabschBaseline:
    tic = time.perf_counter()
    options = options or FitOptions()
    p, q = check_points(p, q, "baseline")
    ctx = context if context is not None else prepare()
    sk = ctx.skeleton
    rng = np.random.default_rng(options.seed)
    mt = match_subset(p, q, ctx.index, options.max_matched, rng, 3, sk.joint_names, "baseline")
    vp, vq = p[mt.sub[mt.valid]], q[mt.sub[mt.valid]]
    dom = mt.m.dominant[mt.valid]
    r0, t0, s0 = robust_similarity(vq, vp, 0.03 * ctx.template.body_length, rng)
    nj = sk.num_joints
    rk, tk, sv, _ = grouped_kabsch(s0 * vq, vp, dom, np.ones(len(dom)), nj)
    cnt = np.bincount(dom, minlength=nj)
    ok = (cnt >= 3) & (sv[:, 1] > 1e-3 * np.maximum(sv[:, 0], 1e-12))
    tr = np.tile(np.eye(4), (nj, 1, 1))
    for j in range(nj):
        if ok[j]:
            tr[j, :3, :3], tr[j, :3, 3] = rk[j], tk[j]
        elif j > 0:
            tr[j] = tr[sk.parents[j]]
        else:
            tr[j, :3, :3], tr[j, :3, 3] = r0, t0
    heads = s0 * sk.rest_heads
    joints = np.einsum("jab,jb->ja", tr[:, :3, :3], heads) + tr[:, :3, 3]
    return KabschBaseline(joints, tr, float(s0), ok, time.perf_counter() - tic)
