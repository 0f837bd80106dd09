"""One shape for the clip: the photo fit on a few keyframes, then one solve over all of them in
which the shape (global scale, bone-length scales, focal factor, per-part thickness) is shared
and each keyframe keeps its own pose. A single frame sees a leg foreshortened or hidden; several
frames of one animal in different poses see its proportions better than any one of them.
"""

from __future__ import annotations

import numpy as np

from ..fitting import fit_to_photo, terms
from . import params, stacked
from .frame import PHOTO_BUDGET, SharedSamples, frame_terms, observe


def keyframes(seen: list[int], obs, count: int) -> list[int]:
    """Up to `count` seen frames evenly spread over the clip, the first seen frame first; beyond
    it only frames that hold one animal (a second animal must not lend the clip its shape)."""
    first = seen[0]
    single = [t for t in seen[1:] if len(obs[t]) == 1]
    if count <= 1 or not single:
        return [first]
    pick = np.linspace(0, len(single) - 1, min(count - 1, len(single))).round().astype(int)
    return [first] + sorted({single[i] for i in pick})


def keyframe_fit(ctx, frame, t: int, options):
    """(the frame observed at the photo fit's budget, its photo options, the photo fit with every
    hypothesis) for keyframe t, whose first animal is `frame` (frame.observe's)."""
    from .fit import _photo_options

    po = _photo_options(options, frame.pm)
    fr = observe(frame.pm, t, ctx, po, options.place_camera, options.seed + t, PHOTO_BUDGET) or frame
    return fr, po, fit_to_photo(fr.points, fr.k_crop, fr.mask, ctx, po, focal_known=fr.focal_known)


def clip_points3d_weight(fits) -> float:
    """The 3D term's weight for the whole clip: the median of what the keyframes' photo fits chose
    (fitting/trust.py: as much as the clip's P agrees with a rig)."""
    return float(np.median([f.photo["points3d_weight"] for f in fits]))


def solve_shape(model, samples, obs, seen, options, report, cancelled, pre=None):
    """({keyframe: x} with the clip's shape, {keyframe: its data cost there}, the clip's 3D term
    weight (clip_points3d_weight)) on the clip's model. pre: {frame: (its first animal's dict,
    keyframe_fit's result)} made beforehand (fit.FrameObserver); one made on the same dict is
    taken as it is."""
    from .fit import _check

    ctx = model.ctx
    keys = keyframes(seen, obs, options.keyframes)
    xs, frames, costs, fits = [], [], [], []
    # The shape is solved once: keyframes get the photo fit's full budget of points and samples.
    samples = SharedSamples(model, ctx.template, PHOTO_BUDGET.vertices)
    pre = pre or {}
    for i, t in enumerate(keys):
        _check(cancelled)
        got = pre.get(t)
        if got is not None and got[0] is obs[t][0].pm:
            fr, po, fit = got[1]
        else:
            fr, po, fit = keyframe_fit(ctx, obs[t][0], t, options)
        xs.append(params.x_from_fit(model, fit, float(fit.intrinsics[0, 0] / fr.k_crop[0, 0])))
        frames.append((fr, po))
        costs.append(float(fit.cost))
        fits.append(fit)
        report("shape", (i + 1) / (len(keys) + 1))
    w3d = clip_points3d_weight(fits)
    if len(keys) == 1 or options.shape_iterations <= 0:
        return {keys[0]: xs[0]}, {keys[0]: costs[0]}, w3d
    shared, pose = params.shape_columns(model), params.pose_columns(model)
    ns, npose = len(shared), len(pose)
    z0 = np.concatenate([np.median(np.stack([x[shared] for x in xs]), axis=0)] + [x[pose] for x in xs])
    blocks, n_terms = [], []
    for i, (x, (fr, po)) in enumerate(zip(xs, frames)):
        zidx = np.full(model.n_params, -1)
        zidx[shared] = np.arange(ns)
        zidx[pose] = ns + i * npose + np.arange(npose)
        ts = frame_terms(model, fr, samples, po, w3d, po.fit.pose_weight)
        n_terms.append(len(ts))
        if i == 0:  # the shape's priors, once for the clip
            nn = len(fr.st.fq)
            ts += [terms.ScalePrior(model, po.fit.scale_weight * np.sqrt(nn)),
                   terms.FocalPrior(model, po.exif_focal_sigma if fr.focal_known else po.focal_sigma),
                   terms.ThicknessPrior(model, po.thickness_weight)]
        blocks.append(stacked.Block(x, zidx, ts))
    sol = stacked.solve(blocks, [], z0, options.shape_iterations, options.photo.tol)
    report("shape", 1.0)
    out = {t: b.x(sol.z) for t, b in zip(keys, blocks)}
    data = {t: float(stacked.terms_cost(b.terms[:nd], b.x(sol.z))[0]) for t, b, nd in zip(keys, blocks, n_terms)}
    return out, data, w3d
