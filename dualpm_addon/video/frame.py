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
from ..fitting import terms
from ..fitting.chain import BoundPoints
from ..fitting.fit import Setup, setup
from ..fitting.photo import PhotoOptions, _vertex_samples, _visible

MIN_POINTS = 50  # as pipeline.MIN_POINTS: fewer kept points and the frame shows no animal


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

    @property
    def size(self) -> int:
        return int(np.asarray(self.pm["P"]).shape[1])

    def photo_intrinsics(self, focal_factor: float) -> np.ndarray:
        """The video frame's intrinsics (its own pixels) under the clip's focal factor."""
        k = self.k_crop.copy()
        k[0, 0] *= focal_factor
        k[1, 1] *= focal_factor
        return camera.uncrop_intrinsics(k, self.box, (self.size, self.size))


def exact_confidence(pm: dict) -> bool:
    """A map whose confidence is the same everywhere is ground truth (dualpm synth, true_map):
    it is kept on occupancy alone, as `dualpm fit` does."""
    c = np.asarray(pm["confidence"])
    return bool(c.size and np.ptp(c) == 0)


def observe(pm: dict, index: int, ctx, options: PhotoOptions, place_camera: bool = True, seed: int = 0) -> Frame | None:
    """The frame's evidence, or None where it shows no animal to fit (too few points, Q off the
    template, points on too few bones)."""
    from ..fit_camera import fit_camera
    from ..pipeline import photo_grid_mask

    exact = exact_confidence(pm)
    pts = pointmap.extract_points(pm, pointmap.OCCUPANCY_THRESHOLD,
                                  -np.inf if exact else pointmap.CONFIDENCE_THRESHOLD)
    if len(pts["P"]) < MIN_POINTS:
        return None
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
    try:
        st = setup(np.asarray(pts["P"], np.float64), np.asarray(pts["Q"], np.float64), ctx, options.fit, rng,
                   photo=True)
    except DualPMError:
        return None
    vis = _visible(pts, ctx, options, rng)
    return Frame(index, pm, pts, k, mask, box, (h, w), st, vis, bool(pm.get("focal_from_exif", False)))


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
    out = [terms.Points3D(bound, st.fp, st.row_scale, points3d_weight, options.fit.loss, options.fit.f_scale),
           terms.PosePriorTerm(model, pose_weight * np.sqrt(n))]
    size = float(frame.mask.shape[0]) if frame.mask is not None else float(frame.size)
    if frame.visible is not None:
        vq, uv, conf, vj, vw = frame.visible
        out.append(terms.Reprojection(BoundPoints(model, vq, vj, vw), uv, frame.k_crop, size, conf,
                                      options.reprojection_weight, "soft_l1", options.reprojection_f_scale))
    if frame.mask is not None:
        out.append(terms.SilhouetteInside(samples.bound, frame.mask, frame.k_crop, options.inside_weight, "soft_l1",
                                          options.silhouette_f_scale))
        out.append(terms.SilhouetteFill(samples.bound, frame.mask, frame.k_crop, options.fill_weight, "soft_l1",
                                        options.silhouette_f_scale))
    return out
