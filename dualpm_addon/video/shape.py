"""One shape for the clip: the photo fit on a few keyframes, then one solve over all of them in
which the shape (global scale, bone-length scales, focal factor, per-part thickness) is shared
and each keyframe keeps its own pose. A single frame sees a leg foreshortened or hidden; several
frames of one animal in different poses see its proportions better than any one of them.
"""

from __future__ import annotations

import numpy as np

from ..fitting import fit_to_photo, terms
from . import params, stacked
from .frame import frame_terms


def keyframes(seen: list[int], obs, count: int) -> list[int]:
    """Up to `count` seen frames evenly spread over the clip, the first seen frame first; beyond
    it only frames that hold one animal (a second animal must not lend the clip its shape)."""
    first = seen[0]
    single = [t for t in seen[1:] if len(obs[t]) == 1]
    if count <= 1 or not single:
        return [first]
    pick = np.linspace(0, len(single) - 1, min(count - 1, len(single))).round().astype(int)
    return [first] + sorted({single[i] for i in pick})


def solve_shape(model, samples, obs, seen, options, report, cancelled):
    """(x of the first seen frame with the clip's shape, {keyframe: x}) on the clip's model."""
    from .fit import _check, _photo_options

    ctx = model.ctx
    keys = keyframes(seen, obs, options.keyframes)
    xs, frames = [], []
    for i, t in enumerate(keys):
        _check(cancelled)
        fr = obs[t][0]
        po = _photo_options(options, fr.pm)
        fit = fit_to_photo(fr.points, fr.k_crop, fr.mask, ctx, po, focal_known=fr.focal_known)
        xs.append(params.x_from_fit(model, fit, float(fit.intrinsics[0, 0] / fr.k_crop[0, 0])))
        frames.append((fr, po))
        report("shape", (i + 1) / (len(keys) + 1))
    if len(keys) == 1 or options.shape_iterations <= 0:
        return xs[0], {keys[0]: xs[0]}
    shared, pose = params.shape_columns(model), params.pose_columns(model)
    ns, npose = len(shared), len(pose)
    z0 = np.concatenate([np.median(np.stack([x[shared] for x in xs]), axis=0)] + [x[pose] for x in xs])
    blocks = []
    for i, (x, (fr, po)) in enumerate(zip(xs, frames)):
        zidx = np.full(model.n_params, -1)
        zidx[shared] = np.arange(ns)
        zidx[pose] = ns + i * npose + np.arange(npose)
        ts = frame_terms(model, fr, samples, po, po.points3d_weight, po.fit.pose_weight)
        if i == 0:  # the shape's priors, once for the clip
            nn = len(fr.st.fq)
            ts += [terms.ScalePrior(model, po.fit.scale_weight * np.sqrt(nn)),
                   terms.FocalPrior(model, po.exif_focal_sigma if fr.focal_known else po.focal_sigma),
                   terms.ThicknessPrior(model, po.thickness_weight)]
        blocks.append(stacked.Block(x, zidx, ts))
    sol = stacked.solve(blocks, [], z0, options.shape_iterations, options.photo.tol)
    report("shape", 1.0)
    out = {t: b.x(sol.z) for t, b in zip(keys, blocks)}
    return out[keys[0]], out
