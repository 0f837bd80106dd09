"""The photo fit: the rig placed on the animal in the photo ("To The Point", Kokkinos et al. 2021:
regress correspondences, then solve camera and deformation by minimising reprojection error).

The predicted 3D points P are the network's weakest output on real photos; the photo's own
evidence is stronger. Beside P (down-weighted), the objective asks that each visible pixel's Q,
as a posed template point, project back onto that pixel (terms/reprojection.py), and that the
posed surface, projected, stay inside the animal's mask (terms/silhouette.py) and cover it
(terms/coverage.py: the mask pixels the rasterized rig misses pull its nearest vertices). The
camera's focal length (held near the EXIF value when the photo has one) and the distance are
solved with the pose, and each body part gets a thickness scale that the outline sets.

Hypotheses (hypotheses.py): the 3D fit's own solution, upright facings in 8 directions, then the
best of those with each clip pose and each authored pose (poses.py: lying on the belly,
sitting); each is solved for the root alone (a few iterations). With a mask they are then ranked
by the rig's outline IoU with it, the best three are refined with every parameter, and the one
whose outline matches the mask best is kept (without a mask: by cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .. import correspondence as corr
from ..errors import DualPMError
from ..rotations import matrix_from_axis_angle, matrix_to_quat, quat_to_axis_angle
from . import hypotheses, solver, terms, trust
from .blas import single_threaded_blas
from .chain import BoundPoints
from .fit import FitOptions, finish, point_terms, run_solver, setup
from .rig import PARTS, FitContext, prepare
from .support import check_points, stratified
from .terms.projection import focal_scaled


@dataclass(frozen=True)
class PhotoOptions:
    """Knobs of the photo fit; the defaults are what docs/fitting.md measures.

    fit: the 3D fit's options (pose and scale priors, subsets, seed), also the start.
    points3d_weight, reprojection_weight, inside_weight, fill_weight: the terms' weights.
    reprojection_f_scale, silhouette_f_scale: robust scales, fractions of the crop's side.
    focal_sigma: log focal spread without EXIF (with EXIF: exif_focal_sigma).
    thickness_weight: prior on the per-part thickness log scales.
    max_reprojection, vertex_samples: subset sizes (visible points, mesh vertices).
    hypotheses: try the facings and poses (False: start from the 3D fit only).
    pose_roots: the best facings each pose is tried with; refined: the best starts refined fully.
    root_iterations, final_iterations: LM iterations of the root-only and the full solves;
    tol: the full solve's relative cost decrease below which it stops.
    fill: "cover" (terms/coverage.py: only mask pixels the rasterized rig misses pull) or
    "nearest" (terms/silhouette.py's SilhouetteFill: every mask sample pulls its nearest vertex).
    screen_iterations: the refined starts are first solved this far (0: all the way), the best
    then solved on to final_iterations: on 32 renders the same rig IoU (within 0.002) as three
    full solves, for 0.1 s less a fit.
    by_outline: with a mask, the hypotheses are ranked, and the refined ones chosen, by the
    outline IoU of the rig with the mask (what the user sees) rather than by the cost, whose
    largest part on a predicted map is the reprojection of a Q that may be a tenth of a body off.
    points3d_spread: the 3D term's weight follows how well P agrees with a rig (trust.py):
    points3d_weight while the 3D fit's median point lies this far (body lengths) or further
    from its posed Q, more as P agrees better (inverse variance), at most points3d_max_weight.
    0: the fixed points3d_weight.
    """

    fit: FitOptions = field(default_factory=lambda: FitOptions(pose_weight=0.01))
    points3d_weight: float = 0.1
    # Predicted Q is a tenth of a body length off, so its reprojection rows are large; the
    # outline is the strong evidence. A sweep on predicted maps of 10 held-out renders
    # (docs/fitting.md) raised rig IoU from 0.45 (all 1) to 0.61 with these.
    reprojection_weight: float = 0.1
    # With the coverage fill the outline may weigh more: 1000 -> 10000 raised rig IoU with the
    # true mask on 32 held-out renders from 0.78 to 0.81 (docs/fitting.md).
    inside_weight: float = 10000.0
    fill_weight: float = 10000.0
    reprojection_f_scale: float = 0.02
    silhouette_f_scale: float = 0.02
    focal_sigma: float = 0.3
    exif_focal_sigma: float = 0.02
    thickness_weight: float = 0.5
    max_reprojection: int = 300
    vertex_samples: int = 500
    hypotheses: bool = True
    pose_roots: int = 1
    refined: int = 3
    root_iterations: int = 4
    final_iterations: int = 12
    tol: float = 5e-3
    fill: str = "cover"
    by_outline: bool = True
    screen_iterations: int = 6
    points3d_spread: float = 0.05
    points3d_max_weight: float = 10.0


def _vertex_samples(template, n: int) -> np.ndarray:
    """Evenly spread mesh vertex ids (a fixed stride over a spatial sort, deterministic)."""
    v = np.asarray(template.vertices)
    order = np.lexsort((v[:, 2], v[:, 0], v[:, 1]))
    return np.sort(order[np.linspace(0, len(v) - 1, min(n, len(v))).round().astype(np.int64)])


def _visible(points: dict, ctx: FitContext, options: PhotoOptions, rng):
    """The layer-0 points whose Q matches the template: their Q, pixels (x, y), weights and skin."""
    layer = np.asarray(points.get("layer", np.zeros(len(points["Q"]))))
    vis = np.nonzero(layer == 0)[0]
    q = np.asarray(points["Q"], dtype=np.float64)[vis]
    m = corr.match(ctx.index, q, k=options.fit.k_nearest, skin_far=False)
    ok = np.nonzero(m.valid)[0]
    if len(ok) < 10:
        return None
    pick = ok[stratified(m.dominant[ok], max(options.max_reprojection // 8, 8), options.max_reprojection, rng)]
    uv = np.asarray(points["pixel"], dtype=np.float64)[vis[pick]][:, ::-1] + 0.5
    conf = np.asarray(points.get("confidence", np.ones(len(layer))), dtype=np.float64)[vis[pick]]
    return q[pick], uv, conf / max(conf.mean(), 1e-9), m.skin_joints[pick], m.skin_weights[pick]


def _place(x, model, r, centre_uv, depth, k, rest_centre):
    """x with root rotation r, and the translation that puts the scaled rest centre at `depth`
    on the ray through pixel centre_uv."""
    x = x.copy()
    x[0:3] = quat_to_axis_angle(matrix_to_quat(r))
    ray = np.linalg.solve(k, np.array([centre_uv[0], centre_uv[1], 1.0]))
    x[3:6] = ray / ray[2] * depth - r @ (np.exp(x[6]) * rest_centre)
    return x


def fit_to_photo(points: dict, intrinsics: np.ndarray, mask: np.ndarray | None = None,
                 context: FitContext | None = None, options: PhotoOptions | None = None,
                 focal_known: bool = False, seen: np.ndarray | None = None):
    """Fit the rig to a photo's dual point map.

    points: pointmap.extract_points' dict (P, Q, layer, pixel (row, col) in the crop grid,
    confidence); intrinsics (3, 3) of that grid; mask (size, size) bool, the animal in the grid
    (None: no silhouette terms); seen (size, size) bool, the grid's pixels that show the photo
    (None: all). Where the crop reaches past the photo's edge the mask says nothing: an animal
    cut by the frame goes on there, so the rig may too (it pays nothing for being outside the
    mask there, and the outline IoU that picks the hypothesis leaves those pixels out). Returns
    a SkeletonFit whose `intrinsics` is the solved camera of the grid and whose `photo` dict
    records the hypotheses and the cost per term.
    """
    with single_threaded_blas():
        return _fit_to_photo(points, intrinsics, mask, context, options or PhotoOptions(), focal_known, seen)


def _fit_to_photo(points, k, mask, context, options: PhotoOptions, focal_known: bool, seen=None):
    timings = {}
    tic = time.perf_counter()
    fo = options.fit
    p, q = check_points(points["P"], points["Q"], "fit")
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0:
        raise DualPMError(f"fit: intrinsics must be a finite (3, 3) camera matrix, got shape {k.shape}")
    size = float(max(k[0, 2], k[1, 2]) * 2)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2 or not mask.any():
            raise DualPMError(f"fit: the mask must be a non-empty (H, W) image, got shape {mask.shape}")
        size = float(max(mask.shape))
        seen = np.ones(mask.shape, bool) if seen is None else np.asarray(seen, dtype=bool)
        if seen.shape != mask.shape:
            raise DualPMError(f"fit: the seen region is {seen.shape}, the mask {mask.shape}")
    ctx = context if isinstance(context, FitContext) else prepare(context)
    template = ctx.template
    rng = np.random.default_rng(fo.seed)
    st = setup(p, q, ctx, fo, rng, photo=True, timings=timings)
    tic = time.perf_counter()
    model = st.model
    # The 3D fit's answer, on the photo model: its thickness and focal columns keep their priors,
    # else the points alone can send a barely seen part's thickness off to exp(100).
    start_terms = point_terms(st, fo) + [terms.FocalPrior(model, options.focal_sigma),
                                         terms.ThicknessPrior(model, options.thickness_weight)]
    x3d = run_solver(start_terms, st.x0, replace(fo, solver="lm")).x
    spread = trust.point_spread(start_terms[0], x3d)
    w3d = trust.points3d_weight(spread, options.points3d_weight, options.points3d_spread, options.points3d_max_weight)
    objective = point_terms(st, fo, w3d)
    coarse = None
    vis = _visible(points, ctx, options, rng)
    if vis is not None:
        vq, uv, conf, vj, vw = vis
        objective.append(terms.Reprojection(BoundPoints(model, vq, vj, vw), uv, k, size, conf,
                                            options.reprojection_weight, "soft_l1", options.reprojection_f_scale))
    if mask is not None:
        ids = _vertex_samples(template, options.vertex_samples)
        verts = BoundPoints(model, np.asarray(template.vertices)[ids], np.asarray(template.skin_joints)[ids],
                            np.asarray(template.skin_weights)[ids])
        objective.append(terms.SilhouetteInside(verts, mask | ~seen, k, options.inside_weight, "soft_l1",
                                                options.silhouette_f_scale))
        mesh_v, mesh_j, mesh_w, faces = _welded(template)
        mesh = BoundPoints(model, mesh_v, mesh_j, mesh_w)
        nearest = terms.SilhouetteFill(verts, mask, k, options.fill_weight, "soft_l1", options.silhouette_f_scale)
        if options.fill == "cover":
            objective.append(terms.SilhouetteCover(verts, mesh, faces, mask, k, options.fill_weight,
                                                   "soft_l1", options.silhouette_f_scale))
            coarse = nearest
        else:
            objective.append(nearest)
    objective.append(terms.FocalPrior(model, options.exif_focal_sigma if focal_known else options.focal_sigma))
    objective.append(terms.ThicknessPrior(model, options.thickness_weight))

    def root_solve(obj, x0, fixed):
        # The root-only solves only place the animal: the nearest-sample fill does that without
        # a rasterization per evaluation; the refinement has the coverage fill.
        if coarse is not None:
            obj = [coarse if isinstance(t, terms.SilhouetteCover) else t for t in obj]
        return _root_solve(obj, model, x0, fixed, options)

    timings["terms"] = time.perf_counter() - tic

    # -- hypotheses --------------------------------------------------------------------------
    tic = time.perf_counter()
    starts = [("fit3d", x3d, model.fixed_rot)]
    if options.hypotheses:
        if mask is not None:
            rows, cols = np.nonzero(mask)
            centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
        else:
            centre = uv.mean(axis=0) if vis is not None else np.array([k[0, 2], k[1, 2]])
        depth = float((matrix_from_axis_angle(x3d[0:3]) @ (np.exp(x3d[6]) * _rest_centre(template)) + x3d[3:6])[2])
        depth = depth if depth > 0 else float(np.median(p[:, 2]))
        rest_x = x3d.copy()
        rest_x[7:model.col_scale] = ctx.prior.mean[model.free].ravel()
        for deg in hypotheses.FACINGS_DEG:
            r = hypotheses.facing_rotation(deg)
            starts.append((f"facing_{deg}", _place(rest_x, model, r, centre, depth, k, _rest_centre(template)),
                           model.fixed_rot))
    solved = []
    for name, x0, fixed in starts:
        sol = root_solve(objective, x0, fixed)
        solved.append((sol.cost, name, sol.x, fixed, objective))
    solved.sort(key=lambda s: s[0])
    if options.hypotheses:
        poses = hypotheses.pose_hypotheses(template)
        modes = hypotheses.prior_modes()
        centre_rest = _rest_centre(template)
        for _, base, xb, _, _ in solved[:options.pose_roots]:
            for pname, local, tilt in poses:
                x0 = _tilted(xb, tilt, np.exp(xb[6]) * centre_rest)
                aa = quat_to_axis_angle(matrix_to_quat(local))
                x0[7:model.col_scale] = aa[model.free].ravel()
                fixed = model.fixed_rot.copy()
                still = np.setdiff1d(np.arange(len(fixed)), model.free)
                fixed[still] = np.where(ctx.fixed[still, None, None], fixed[still], local[still])
                # A lying or sitting pose is its own mode of the pose prior: held by its
                # component, not pulled back toward the clips' mean standing pose.
                obj = [t.centred(aa) if isinstance(t, terms.PosePriorTerm) else t for t in objective] \
                    if pname in modes else objective
                sol = root_solve(obj, x0, fixed)
                solved.append((sol.cost, f"{base}+{pname}", sol.x, fixed, obj))
        model.set_fixed(starts[0][2])
        solved.sort(key=lambda s: s[0])
        if options.by_outline and mask is not None:
            scored = []
            for sv in solved:
                model.set_fixed(sv[3])
                scored.append((-_outline_iou(mesh, faces, k, sv[2], mask, seen), sv))
            model.set_fixed(starts[0][2])
            scored.sort(key=lambda s: s[0])
            solved = [sv for _, sv in scored]
    timings["hypotheses"] = time.perf_counter() - tic

    # -- refinement of the best --------------------------------------------------------------
    tic = time.perf_counter()
    best = None
    several = min(options.refined, len(solved)) > 1
    first = options.screen_iterations if several and options.screen_iterations else options.final_iterations
    for c0, name, x0, fixed, obj in solved[:options.refined]:
        model.set_fixed(fixed)
        sol = solver.levenberg_marquardt(obj, x0, first, options.tol)
        score = sol.cost
        if options.by_outline and mask is not None:
            score = -_outline_iou(mesh, faces, k, sol.x, mask, seen)
        if best is None or score < best[4]:
            best = (sol, name, fixed, obj, score)
    sol, name, fixed, objective, _ = best
    model.set_fixed(fixed)
    if first < options.final_iterations:  # the screened winner solved on to the full count
        sol = solver.levenberg_marquardt(objective, sol.x, options.final_iterations - first, options.tol)
    timings["solve"] = time.perf_counter() - tic
    out = finish(st, p, q, sol.x, sol, fo, timings)
    out.intrinsics = focal_scaled(k, model.log_focal(sol.x))
    out.photo = {"hypothesis": name, "hypotheses_tried": len(solved),
                 "cost_terms": {n: round(v, 6) for n, v in solver.breakdown(objective, sol.x).items()},
                 "focal_factor": float(np.exp(model.log_focal(sol.x))),
                 "thickness": {pn: float(t) for (pn, _), t in zip(PARTS, np.exp(model.thickness_block(sol.x)))},
                 "visible_points": 0 if vis is None else int(len(vis[0])), "mask": mask is not None,
                 "points3d_spread": round(float(spread), 5), "points3d_weight": round(float(w3d), 4)}
    return out


def _welded(template):
    """The template mesh with its coincident vertices (UV seams: 4,400 of them at 1,093 places)
    merged: what the outline needs, posed and rasterized at every evaluation for a quarter of
    the cost. (vertices, skin joints, skin weights, faces)."""
    v = np.asarray(template.vertices)
    _, first, inverse = np.unique(np.round(v, 6), axis=0, return_index=True, return_inverse=True)
    return (v[first], np.asarray(template.skin_joints)[first], np.asarray(template.skin_weights)[first],
            inverse.reshape(-1)[np.asarray(template.faces)])


def _outline_iou(mesh: BoundPoints, faces, k, x, mask, seen) -> float:
    """IoU of the posed mesh, rasterized through the solved camera, with the mask, over the
    grid's pixels that show the photo."""
    from .. import silhouette as raster

    kf = focal_scaled(k, mesh.model.log_focal(x))
    return raster.iou(raster.rasterize(mesh.camera(x), faces, kf, mask.shape) & seen, mask)


def _tilted(x, tilt, centre):
    """x with the animal tilted in model space (tilt, 3x3) about `centre` (model space, scaled):
    the rest centre stays where it was in the camera."""
    if np.allclose(tilt, np.eye(3)):
        return x.copy()
    out = x.copy()
    r = matrix_from_axis_angle(x[0:3])
    r2 = r @ tilt
    out[0:3] = quat_to_axis_angle(matrix_to_quat(r2))
    out[3:6] = x[3:6] + r @ centre - r2 @ centre
    return out


def _root_solve(objective, model, x0, fixed, options: PhotoOptions) -> solver.Solution:
    """A few LM iterations on the root alone (rotation, translation, scale, focal) from x0."""
    model.set_fixed(fixed)
    model.root_only = True
    try:
        return solver.levenberg_marquardt(objective, x0, options.root_iterations, options.fit.tol, model.active(True))
    finally:
        model.root_only = False


def _rest_centre(template) -> np.ndarray:
    v = np.asarray(template.vertices)
    return (v.min(axis=0) + v.max(axis=0)) / 2
