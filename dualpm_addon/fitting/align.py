"""Rigid and similarity alignment of point sets: weighted Kabsch, many sets at once, and a
RANSAC-started robust similarity."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
           with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Weighted least-squares R, t (and scale s when asked) with dst ~ s R src + t.

    src, dst (N, 3); weights (N,) >= 0. Returns R (3, 3), t (3,), s, and the singular values
    (3,) of the weighted cross-covariance (the second one says how well-posed R is).
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    tw = w.sum()
    if tw <= 0:
        return np.eye(3), np.zeros(3), 1.0, np.zeros(3)
    ms, md = w @ src / tw, w @ dst / tw
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a / tw
    u, sv, vt = np.linalg.svd(cov)
    e = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = (u * e) @ vt
    s = 1.0
    if with_scale:
        var = float(w @ np.sum(a * a, axis=1) / tw)
        s = float(np.sum(sv * e) / var) if var > 0 else 1.0
    return r, md - s * r @ ms, s, sv


def group_median(values: np.ndarray, group: np.ndarray, groups: int, default: float = np.nan) -> np.ndarray:
    """(groups,) median of `values` per group id (lower median for even counts; `default` where
    a group is empty), with one sort instead of a loop over groups."""
    order = np.lexsort((values, group))
    gs, vs = group[order], values[order]
    starts = np.searchsorted(gs, np.arange(groups))
    counts = np.searchsorted(gs, np.arange(groups), side="right") - starts
    out = np.full(groups, default, dtype=np.float64)
    has = counts > 0
    out[has] = vs[starts[has] + (counts[has] - 1) // 2]
    return out


def grouped_kabsch(src: np.ndarray, dst: np.ndarray, group: np.ndarray, weight: np.ndarray, groups: int,
                   iterations: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Kabsch for many point sets at once: point i belongs to set group[i] (-1: none)
    with weight[i]. Returns R (G, 3, 3), t (G, 3) with dst ~ R src + t per set, the singular
    values (G, 3) of each cross-covariance and every point's residual (N,) under its set's
    transform (inf for no set). `iterations` > 0 reweights each set's points by Geman-McClure
    weights at 2.5x the set's median residual, so that outliers lose their pull."""
    inset = group >= 0
    g = np.where(inset, group, 0)
    w0 = np.where(inset, weight, 0.0)
    w = w0
    res = np.full(len(src), np.inf)
    # Per-point features whose weighted group sums give the centroids and cross-covariances.
    feats = np.concatenate([np.ones((len(src), 1)), src, dst, (dst[:, :, None] * src[:, None, :]).reshape(-1, 9)], 1)
    cols = np.arange(len(src))
    for it in range(iterations + 1):
        sums = sparse.csr_matrix((w, (g, cols)), shape=(groups, len(src))) @ feats
        tw = np.maximum(sums[:, 0], 1e-12)
        ms, md = sums[:, 1:4] / tw[:, None], sums[:, 4:7] / tw[:, None]
        cov = sums[:, 7:].reshape(-1, 3, 3) / tw[:, None, None] - md[:, :, None] * ms[:, None, :]
        u, sv, vt = np.linalg.svd(cov)
        d = np.sign(np.linalg.det(u @ vt))
        u[:, :, 2] *= np.where(d == 0, 1.0, d)[:, None]
        r = u @ vt
        t = md - np.einsum("gij,gj->gi", r, ms)
        res = np.where(inset, np.linalg.norm(np.einsum("nij,nj->ni", r[g], src) + t[g] - dst, axis=1), np.inf)
        if it == iterations:
            break
        med = group_median(res[inset], g[inset], groups, default=1.0)
        c2 = (2.5 * np.maximum(med, 1e-9)) ** 2
        w = w0 * (c2[g] / (c2[g] + res**2)) ** 2
    return r, t, sv, res


def robust_similarity(src: np.ndarray, dst: np.ndarray, threshold: float, rng=None, hypotheses: int = 32,
                      iterations: int = 2, score_points: int = 128) -> tuple[np.ndarray, np.ndarray, float]:
    """Similarity dst ~ s R src + t that a third of gross outliers does not drag.

    RANSAC first (similarities from random 4-point samples, scored by the truncated squared
    residual, MSAC, with inliers closer than `threshold`, in src units, times the hypothesis'
    scale), then iteratively reweighted Umeyama from the best hypothesis' inliers (Geman-McClure
    weights at 2.5x the median inlier residual). Plain reweighting from a least-squares start
    collapses the scale when outliers spread far in depth; the sampling does not."""
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(src)
    if n >= 8:
        idx = rng.integers(0, n, size=(hypotheses, 4))
        s4, d4 = src[idx], dst[idx]
        ms, md = s4.mean(axis=1), d4.mean(axis=1)
        a, b = s4 - ms[:, None], d4 - md[:, None]
        cov = np.einsum("hni,hnj->hij", b, a)
        u, sv, vt = np.linalg.svd(cov)
        det = np.sign(np.linalg.det(u @ vt))
        e = np.stack([np.ones(hypotheses), np.ones(hypotheses), np.where(det == 0, 1.0, det)], axis=1)
        r = (u * e[:, None, :]) @ vt
        var = np.einsum("hni,hni->h", a, a)
        sc = np.where(var > 0, np.sum(sv * e, axis=1) / np.maximum(var, 1e-30), 0.0)
        t = md - sc[:, None] * np.einsum("hij,hj->hi", r, ms)
        probe = rng.choice(n, min(n, score_points), replace=False)
        d = sc[:, None, None] * np.einsum("hij,nj->hni", r, src[probe]) + t[:, None] - dst[probe]
        tau = np.maximum(sc, 1e-12) * threshold
        score = np.minimum(np.einsum("hni,hni->hn", d, d) / tau[:, None] ** 2, 1.0)
        good = (sc > 0) & (sv[:, 1] > 1e-6 * np.maximum(sv[:, 0], 1e-30))
        best = int(np.argmin(np.where(good[:, None], score, 1.0).sum(axis=1)))
        res = np.linalg.norm(sc[best] * src @ r[best].T + t[best] - dst, axis=1)
        w = (res < tau[best]).astype(np.float64)
        if w.sum() < 4:
            w = np.ones(n)
    else:
        w = np.ones(n)
    r, t, s, _ = kabsch(src, dst, w, with_scale=True)
    for _ in range(iterations):
        res = np.linalg.norm(s * src @ r.T + t - dst, axis=1)
        c = 2.5 * max(float(np.median(res[w > 0.5])) if np.any(w > 0.5) else float(np.median(res)), 1e-9)
        w = (c * c / (c * c + res * res)) ** 2
        r, t, s, _ = kabsch(src, dst, w, with_scale=True)
    return r, t, s
