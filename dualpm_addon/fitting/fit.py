"""The 3D fit: the template skeleton fitted to an amodal point cloud (P, Q) by least squares along
the kinematic chain. fit_to_photo (photo.py) starts from it and adds the photo's own evidence.

Steps: Q matched to the template (support.py), the stratified subset, the start (init.py), then
Levenberg-Marquardt (solver.py) on the 3D point term and the priors (terms/), and the result
(result.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import correspondence as corr
from ..errors import DualPMError
from ..rotations import matrix_from_axis_angle, matrix_to_quat, quat_to_axis_angle
from . import solver, terms
from .align import grouped_kabsch, robust_similarity
from .blas import single_threaded_blas
from .chain import BoundPoints, ChainModel
from .init import local_rotations_from_kabsch
from .result import FLAG_NO_SUPPORT, FLAG_WEAK_SUPPORT, SkeletonFit, build
from .rig import FIXED_BONES, FitContext, prepare
from .support import check_points, match_subset, stratified

OUTLIER_FRACTION = 0.08  # residual under its bone's rigid Kabsch, fraction of body length
# FitOptions' pose_weight is tuned on exact maps. A predictor's maps are far noisier (its Q is
# often a tenth of a body length off), and there the data alone bends limbs into poses no animal
# takes: a ten times stronger prior lowered the whole pipeline's joint error on held-out renders
# from 18.0 % to 16.0 % of body length (docs/fitting.md). Used for predicted maps.
PREDICTED_POSE_WEIGHT = 0.01


@dataclass(frozen=True)
class FitOptions:
    """Knobs of the fit; the defaults are what docs/fitting.md measures.

    max_matched: points sent to the KD-tree (a random subset; support and init come from them).
    max_points / per_bone: the solver's subset, at most `per_bone` points per dominant bone.
    k_nearest: skin weights of the solver's points blend this many nearest surface samples
        (the matched subset uses the nearest one: its dominant bone is all that counts there).
    kabsch_iterations: robust reweightings of the per-bone Kabsch that initialises the pose.
    loss, f_scale: robust loss on the data rows and its scale, a fraction of body length.
    pose_weight, scale_weight: prior weights per unit Mahalanobis distance / unit log-scale,
        against the data rows in body lengths (both grow with sqrt(points), so the balance does
        not depend on max_points).
    min_support: matched points below which a bone (with all below it) is unsupported.
    unsupported: "mirror" (an unsupported bone copies its supported left/right partner,
        mirrored; else the prior mean) or "prior" (always the prior mean).
    solver: "lm" (Levenberg-Marquardt on the normal equations) or "scipy" (least_squares, trf).
    max_iter, tol: LM iterations, and the relative cost decrease below which it stops;
    max_nfev: scipy evaluations.
    surface_pull: 0..1, how far each posed mesh vertex moves toward the observed points near it
        (the mean residual of the inlier points whose Q is within pull_radius body lengths).
    point_weights: also give skin weights to every input point (one KD-tree query for all).
    """

    max_matched: int = 1500
    max_points: int = 300
    per_bone: int = 12
    k_nearest: int = corr.K_NEAREST
    kabsch_iterations: int = 2
    loss: str = "soft_l1"
    f_scale: float = 0.01
    pose_weight: float = 0.001
    scale_weight: float = 0.004
    min_support: int = 3
    solver: str = "lm"
    max_iter: int = 10
    tol: float = 5e-3
    max_nfev: int = 300
    unsupported: str = "mirror"
    surface_pull: float = 0.0
    pull_radius: float = 0.03
    point_weights: bool = True
    seed: int = 0


@dataclass
class Setup:
    """What every solve of one cloud shares: the matched subset, support and flags, the solver's
    points (fp, fq and their skin fj, fw), the chain model, and the start x0."""

    ctx: FitContext
    matched: object
    flags: np.ndarray
    no_support: np.ndarray
    fp: np.ndarray
    fq: np.ndarray
    fj: np.ndarray
    fw: np.ndarray
    s0: float
    model: ChainModel
    x0: np.ndarray
    row_scale: float


def setup(p, q, ctx: FitContext, options: FitOptions, rng, photo: bool = False, timings: dict | None = None) -> Setup:
    timings = {} if timings is None else timings
    tic = time.perf_counter()
    template, sk = ctx.template, ctx.skeleton
    nj = sk.num_joints
    mt = match_subset(p, q, ctx.index, options.max_matched, rng, options.min_support, sk.joint_names, "fit")
    m, valid = mt.m, mt.valid
    subtree = ctx.anc.T.astype(np.int64) @ mt.support  # matched points on each bone or below it
    no_support = subtree < options.min_support
    flags = np.where(no_support, FLAG_NO_SUPPORT, 0) | np.where(
        ~no_support & ctx.has_skin & (mt.support < options.min_support), FLAG_WEAK_SUPPORT, 0)
    timings["correspondence"] = time.perf_counter() - tic

    tic = time.perf_counter()
    allp, allq = p[mt.sub[valid]], q[mt.sub[valid]]
    dom, dom_w = m.dominant[valid], m.skin_weights[valid, 0]
    core = np.isin(dom, ctx.core)
    if core.sum() < 20:
        core[:] = True
    r0, t0, s0 = robust_similarity(allq[core], allp[core], 0.03 * template.body_length, rng)
    # Per-bone robust Kabsch on every matched point that one bone dominates (weight > 0.5).
    rk, _, sv, res = grouped_kabsch(s0 * allq, allp, np.where(dom_w > 0.5, dom, -1), dom_w, nj,
                                    iterations=options.kabsch_iterations)
    cnt = np.bincount(dom[dom_w > 0.5], minlength=nj)
    kabsch_ok = (cnt >= 4) & (sv[:, 1] > 0.05 * np.maximum(sv[:, 0], 1e-12))
    # Gross outliers (a wrong Q or a stray P) sit far from their own bone's rigid fit: leave
    # them out of the solver's subset.
    inlier = ~np.isfinite(res) | (res <= OUTLIER_FRACTION * s0 * template.body_length)
    keep = np.nonzero(inlier)[0]
    pick = keep[stratified(dom[keep], options.per_bone, options.max_points, rng)]
    fp, fq = allp[pick], allq[pick]
    if options.k_nearest > 1:
        mf = corr.match(ctx.index, fq, k=options.k_nearest, max_distance=np.inf)
        fj, fw = mf.skin_joints, mf.skin_weights
    else:
        fj, fw = m.skin_joints[valid[pick]], m.skin_weights[valid[pick]]
    free = np.nonzero(~ctx.fixed & ~no_support)[0]
    prior_rot = matrix_from_axis_angle(ctx.prior.mean)
    fixed_rot = np.where((no_support | ctx.fixed)[:, None, None], prior_rot, np.eye(3))
    fixed_rot[[sk.index(b) for b in FIXED_BONES if b in sk.joint_names] + [0]] = np.eye(3)
    local_rot = local_rotations_from_kabsch(ctx, rk, kabsch_ok, r0, free, fixed_rot, prior_rot)
    model = ChainModel(ctx, free, fixed_rot, photo=photo)
    x0 = np.zeros(model.n_params)
    x0[0:3] = quat_to_axis_angle(matrix_to_quat(r0))
    x0[3:6] = t0
    x0[6] = np.log(s0)
    x0[7:model.col_scale] = quat_to_axis_angle(matrix_to_quat(local_rot[free])).ravel()
    timings["init"] = time.perf_counter() - tic
    return Setup(ctx, mt, flags, no_support, fp, fq, fj, fw, float(s0), model, x0,
                 1.0 / (s0 * template.body_length))


def point_terms(st: Setup, options: FitOptions, weight: float = 1.0) -> list:
    """The 3D point term and the pose and scale priors (their weights grow with sqrt(points), so
    the balance does not depend on max_points)."""
    bound = BoundPoints(st.model, st.fq, st.fj, st.fw)
    n = len(st.fq)
    return [terms.Points3D(bound, st.fp, st.row_scale, weight, options.loss, options.f_scale),
            terms.PosePriorTerm(st.model, options.pose_weight * np.sqrt(n)),
            terms.ScalePrior(st.model, options.scale_weight * np.sqrt(n))]


def run_solver(objective, x0, options: FitOptions, active=None, max_iter: int | None = None) -> solver.Solution:
    if options.solver == "lm":
        return solver.levenberg_marquardt(objective, x0, options.max_iter if max_iter is None else max_iter,
                                          options.tol, active)
    if options.solver == "scipy":
        return solver.solve_scipy(objective, x0, options.max_nfev)
    raise DualPMError(f"fit: unknown solver {options.solver!r}; one of lm, scipy")


def finish(st: Setup, p, q, x, sol, options: FitOptions, timings: dict) -> SkeletonFit:
    tic = time.perf_counter()
    bound = BoundPoints(st.model, st.fq, st.fj, st.fw)
    fp = {"P": st.fp, "Q": st.fq, "camera": bound.camera(x), "joint": st.fj[:, 0]}
    mt = st.matched
    out = build(st.ctx, st.model, x, fp, mt.support, st.flags, st.no_support, float(np.mean(mt.m.valid)), options,
                sol, q, mt.sub, mt.m, timings)
    timings["output"] = time.perf_counter() - tic
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    return out


def fit(p: np.ndarray, q: np.ndarray, context: FitContext | None = None,
        options: FitOptions | None = None, *, index: corr.TemplateIndex | None = None,
        prior=None) -> SkeletonFit:
    """Fit the reference template's skeleton to observed points.

    p (N, 3) camera space and q (N, 3) canonical space, metres; `context` from `prepare()`
    (built here when absent; pass one to reuse it across fits). A Template may stand in for
    the context, with `index` and `prior` to reuse (prepare() then runs on every call, about
    2 ms without the index). Returns a SkeletonFit. Bad input (wrong shapes, empty, NaN, Q off
    the template, points on fewer than 3 bones) raises a one-line DualPMError.
    """
    with single_threaded_blas():
        timings = {}
        options = options or FitOptions()
        solver.rho(np.zeros(1), options.loss)
        p, q = check_points(p, q)
        ctx = context if isinstance(context, FitContext) else prepare(context, prior, index)
        st = setup(p, q, ctx, options, np.random.default_rng(options.seed), timings=timings)
        tic = time.perf_counter()
        sol = run_solver(point_terms(st, options), st.x0, options)
        timings["solve"] = time.perf_counter() - tic
        return finish(st, p, q, sol.x, sol, options, timings)
