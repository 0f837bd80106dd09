"""One video frame as the clip fit sees it: the predicted dual point map of its crop turned into
the photo fit's evidence (fitting/photo.py), bound to the clip's one kinematic model.

`observe(pm, ctx, ...)` keeps the points inference keeps, places the cloud on its pixels
(fit_camera, translation only), matches Q to the template and picks the solver's subsets (the 3D
fit's `setup`: stratified points, its own start), and the visible points whose Q reprojects onto
their pixels. `frame_terms(model, frame, ...)` gives that frame's data terms on the clip's model:
3D points, reprojection of Q, the outline (inside and fill) and the pose prior. Frames share
the model (one shape); each has its own parameter vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import camera, pointmap
from ..errors import DualPMError
from .. import correspondence as corr
from ..fitting import terms
from ..fitting.chain import BoundPoints
from ..fitting.fit import Setup, setup
from ..fitting.photo import PhotoOptions, _vertex_samples
from ..fitting.support import stratified
from ..fitting.terms.silhouette import mask_samples

MIN_POINTS = 50  # as pipeline.MIN_POINTS: fewer kept points and the frame shows no animal
MAX_POINTS = 4000  # kept points a frame's fits see (subsample)


@dataclass
class Frame:
    """index: the frame's position in the clip; pm: predict_photo's dict; points: the kept points
    (P placed on the pixels); k_crop (3, 3): the crop grid's intrinsics as predicted (before the
    clip's focal factor); mask (S, S) bool: the animal in the grid, or None; box: the crop in
    video pixels; photo_size (H, W); st: the 3D fit's setup (subset and start); visible: the
    reprojection subset (Q, uv, weights, skin) or None."""

    index: int
    pm: dict
    points: dict
    k_crop: np.ndarray
    mask: np.ndarray | None
    box: np.ndarray
    photo_size: tuple[int, int]
    st: Setup
    visible: tuple | None
    focal_known: bool
    fill_samples: np.ndarray | None = None
    # a smaller subset than the photo fit's carries its weight: the terms keep the photo fit's balance
    points_gain: float = 1.0
    visible_gain: float = 1.0

    @property
    def size(self) -> int:
        return int(np.asarray(self.pm["P"]).shape[1])

    def photo_intrinsics(self, focal_factor: float) -> np.ndarray:
        """The video frame's intrinsics (its own pixels) under the clip's focal factor."""
        k = self.k_crop.copy()
        k[0, 0] *= focal_factor
        k[1, 1] *= focal_factor
        return camera.uncrop_intrinsics(k, self.box, (self.size, self.size))


def subsample(points: dict, n: int, rng) -> dict:
    """At most n of the kept points (a random subset, in their order): a frame keeps thousands,
    the photo fit looks at a few hundred of them, and matching them all to the template is the
    photo fit's largest cost."""
    m = len(points["P"])
    if m <= n:
        return points
    keep = np.sort(rng.choice(m, n, replace=False))
    return {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == m else v) for k, v in points.items()}


def exact_confidence(pm: dict) -> bool:
    """A map whose confidence is the same everywhere is ground truth (dualpm synth, true_map):
    it is kept on occupancy alone, as `dualpm fit` does."""
    c = np.asarray(pm["confidence"])
    return bool(c.size and np.ptp(c) == 0)


@dataclass(frozen=True)
class FrameBudget:
    """How much of a frame the clip fit looks at per iteration (a photo fit looks at more: the
    clip has many frames, and each starts near its answer). matched: points matched to find the
    bones' support; points: the 3D term's subset; visible: the reprojection subset; vertices:
    mesh samples of the outline terms; mask_boundary, mask_interior: the fill term's mask pixels."""

    matched: int = 600
    points: int = 150
    per_bone: int = 6
    visible: int = 150
    vertices: int = 250
    mask_boundary: int = 150
    mask_interior: int = 50


# What the photo fit looks at (fitting.PhotoOptions, FitOptions defaults): the keyframes' budget.
PHOTO_BUDGET = FrameBudget(matched=1500, points=300, per_bone=12, visible=300, vertices=500, mask_boundary=240,
                           mask_interior=160)


def visible_subset(points: dict, ctx, k_nearest: int, n: int, rng):
    """The layer-0 points whose Q matches the template, at most n of them stratified by bone: their
    Q, pixels (x, y), confidence weights (mean 1) and skin. Matched after a random pick of 3n, so a
    frame's thousands of visible pixels cost no more than a few hundred."""
    layer = np.asarray(points.get("layer", np.zeros(len(points["Q"]))))
    vis = np.nonzero(layer == 0)[0]
    if len(vis) > 3 * n:
        vis = np.sort(rng.choice(vis, 3 * n, replace=False))
    q = np.asarray(points["Q"], dtype=np.float64)[vis]
    m = corr.match(ctx.index, q, k=k_nearest, skin_far=False)
    ok = np.nonzero(m.valid)[0]
    if len(ok) < 10:
        return None
    pick = ok[stratified(m.dominant[ok], max(n // 8, 8), n, rng)]
    uv = np.asarray(points["pixel"], dtype=np.float64)[vis[pick]][:, ::-1] + 0.5
    conf = np.asarray(points.get("confidence", np.ones(len(layer))), dtype=np.float64)[vis[pick]]
    return q[pick], uv, conf / max(conf.mean(), 1e-9), m.skin_joints[pick], m.skin_weights[pick]


def observe(pm: dict, index: int, ctx, options: PhotoOptions, place_camera: bool = True, seed: int = 0,
            budget: FrameBudget | None = None, max_points: int | None = MAX_POINTS) -> Frame | None:
    """The frame's evidence, or None where it shows no animal to fit (too few points, Q off the
    template, points on too few bones). max_points: the kept points it looks at (None: all)."""
    from dataclasses import replace
    from ..fit_camera import fit_camera
    from ..pipeline import photo_grid_mask

    exact = exact_confidence(pm)
    pts = pointmap.extract_points(pm, pointmap.OCCUPANCY_THRESHOLD,
                                  -np.inf if exact else pointmap.CONFIDENCE_THRESHOLD)
    if len(pts["P"]) < MIN_POINTS:
        return None
    if max_points is not None:
        pts = subsample(pts, max_points, np.random.default_rng([seed, 0x5B]))
    k = np.asarray(pm["intrinsics"], dtype=np.float64)
    size = int(np.asarray(pm["P"]).shape[1])
    h, w = (int(v) for v in np.asarray(pm.get("photo_size", (size, size))))
    box = np.asarray(pm.get("crop_box", (0.0, 0.0, float(w), float(h))), dtype=np.float64)
    if place_camera and not exact:
        uv = pts["pixel"][:, ::-1].astype(np.float64) + 0.5
        try:
            pts["P"] = fit_camera(pts["P"], uv, k, solve_focal=False, seed=seed).apply(pts["P"]).astype(np.float32)
        except DualPMError:
            return None
    photo_mask = pm.get("photo_mask")
    mask = photo_grid_mask(pm, photo_mask, box, size)
    mask = mask if mask.any() else None
    rng = np.random.default_rng(seed)
    b = budget or FrameBudget()
    fo = replace(options.fit, max_matched=b.matched, max_points=b.points, per_bone=b.per_bone)
    try:
        st = setup(np.asarray(pts["P"], np.float64), np.asarray(pts["Q"], np.float64), ctx, fo, rng, photo=True)
    except DualPMError:
        return None
    vis = visible_subset(pts, ctx, options.fit.k_nearest, b.visible, rng)
    fill = mask_samples(mask, b.mask_boundary, b.mask_interior) if mask is not None else None
    return Frame(index, pm, pts, k, mask, box, (h, w), st, vis, bool(pm.get("focal_from_exif", False)), fill,
                 PHOTO_BUDGET.points / b.points, PHOTO_BUDGET.visible / b.visible)


class SharedSamples:
    """Mesh vertex samples bound once to the clip's model (every frame's outline terms use them)."""

    def __init__(self, model, template, n: int):
        ids = _vertex_samples(template, n)
        self.bound = BoundPoints(model, np.asarray(template.vertices)[ids], np.asarray(template.skin_joints)[ids],
                                 np.asarray(template.skin_weights)[ids])


def frame_terms(model, frame: Frame, samples: SharedSamples, options: PhotoOptions, points3d_weight: float,
                pose_weight: float) -> list:
    """The frame's data terms and its pose prior on `model` (the clip's)."""
    st = frame.st
    bound = BoundPoints(model, st.fq, st.fj, st.fw)
    n = len(st.fq)
    out = [terms.Points3D(bound, st.fp, st.row_scale, points3d_weight * frame.points_gain, options.fit.loss,
                          options.fit.f_scale),
           terms.PosePriorTerm(model, pose_weight * np.sqrt(n * frame.points_gain))]
    size = float(frame.mask.shape[0]) if frame.mask is not None else float(frame.size)
    if frame.visible is not None:
        vq, uv, conf, vj, vw = frame.visible
        out.append(terms.Reprojection(BoundPoints(model, vq, vj, vw), uv, frame.k_crop, size, conf,
                                      options.reprojection_weight * frame.visible_gain, "soft_l1",
                                      options.reprojection_f_scale))
    if frame.mask is not None:
        out.append(terms.SilhouetteInside(samples.bound, frame.mask, frame.k_crop, options.inside_weight, "soft_l1",
                                          options.silhouette_f_scale))
        out.append(terms.SilhouetteFill(samples.bound, frame.mask, frame.k_crop, options.fill_weight, "soft_l1",
                                        options.silhouette_f_scale, samples=frame.fill_samples))
    return out
