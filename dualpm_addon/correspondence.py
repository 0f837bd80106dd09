"""Canonical points Q to the reference template: nearest surface point, skin weights, rejection.

Q (canonical.py) is the horse's rest-pose model space in metres, so a predicted Q names a point
on the reference template's rest surface. The template mesh is low-poly (a surface point of the
horse lies up to 14 cm from its nearest vertex, 4 cm in the median), so a KD-tree over the bare
`canonical_vertices` would give coarse weights and could not tell a wrong Q from a point in the
middle of a big triangle. `TemplateIndex` therefore holds a scipy cKDTree over the canonical
vertices *plus* points sampled on a barycentric grid inside every triangle (spacing
`DENSE_SPACING`, 2 cm): distances are then distances to the surface (within about 1 cm) and the
skin weights of the samples are the mesh's own linear interpolation of its vertex weights.

A point's skin weights are the inverse-distance blend of its k nearest samples' weights, reduced
to the 4 largest (skinning.top_k_weights). A match is rejected when its nearest sample is
farther than `max_distance` (default `REJECT_FRACTION` = 4 % of the template's body length,
9.7 cm on the horse): canonical points of other species land within about 3 cm of the horse
surface in the median (tests/test_correspondence.py measures it), a well-predicted Q within a
few cm, while Q of background or of a confused prediction lands far off the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .errors import DualPMError
from .skinning import dense_weights, top_k_weights

DENSE_SPACING = 0.02  # metres between grid samples inside a triangle
REJECT_FRACTION = 0.04  # max distance Q -> template surface, as a fraction of body length
K_NEAREST = 4


@dataclass(frozen=True)
class TemplateIndex:
    """A KD-tree over the reference template's canonical surface, built once per template.

    points (S, 3) canonical surface samples (vertices first, then triangle-grid samples);
    skin_joints (S, 4) int and skin_weights (S, 4) the 4 largest interpolated skin weights of
    every sample; num_joints of the template's skeleton; body_length of the template in metres.
    """

    tree: cKDTree
    points: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    num_joints: int
    body_length: float


@dataclass(frozen=True)
class Correspondence:
    """Matches of N canonical points to the template.

    valid (N,) bool: finite Q within `max_distance` of the template surface.
    distance (N,) metres from Q to the nearest surface sample (inf for non-finite Q).
    skin_joints (N, 4) int and skin_weights (N, 4) float (rows sum to 1; rejected rows still
    hold the weights of their nearest sample, or joint 0 with weight 1 for non-finite Q).
    dominant (N,) int: the bone with the largest weight.
    max_distance: the rejection threshold that was used, metres.
    """

    valid: np.ndarray
    distance: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    dominant: np.ndarray
    max_distance: float


def _grid_barycentrics(n: int) -> np.ndarray:
    """Barycentric coordinates (M, 3) of the strictly interior and edge points of an n-grid,
    without the three corners (the vertices are in the index already)."""
    out = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    b = np.array([c for c in out if max(c) < n], dtype=np.float64).reshape(-1, 3)
    return b / n


def build_index(template, spacing: float = DENSE_SPACING) -> TemplateIndex:
    """Index the template's canonical surface: its vertices and a barycentric grid per triangle."""
    v = np.asarray(template.canonical_vertices, dtype=np.float64)
    f = np.asarray(template.faces)
    j = template.skeleton.num_joints
    w = dense_weights(template.skin_joints, template.skin_weights, j)
    if spacing <= 0:
        raise DualPMError(f"correspondence: spacing {spacing} must be positive")
    edges = np.stack([v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 1]], v[f[:, 0]] - v[f[:, 2]]], 1)
    n_sub = np.maximum(1, np.ceil(np.linalg.norm(edges, axis=-1).max(axis=1) / spacing)).astype(int)
    pts, wts = [v], [w]
    for n in np.unique(n_sub):
        if n < 2:
            continue
        bary = _grid_barycentrics(int(n))
        faces = f[n_sub == n]
        pts.append(np.einsum("mk,fkc->fmc", bary, v[faces]).reshape(-1, 3))
        wts.append(np.einsum("mk,fkj->fmj", bary, w[faces]).reshape(-1, j))
    points = np.concatenate(pts)
    sj, sw = top_k_weights(np.concatenate(wts), 4)
    return TemplateIndex(cKDTree(points), points, sj.astype(np.int64), sw.astype(np.float64), j,
                         float(template.body_length))


def _top4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4 largest weights per row, largest first, renormalised (argpartition: no full sort)."""
    idx = np.argpartition(-w, 3, axis=1)[:, :4]
    val = np.take_along_axis(w, idx, axis=1)
    order = np.argsort(-val, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    val = np.take_along_axis(val, order, axis=1)
    return idx, val / np.maximum(val.sum(axis=1, keepdims=True), 1e-12)


def match(index: TemplateIndex, q: np.ndarray, k: int = K_NEAREST,
          max_distance: float | None = None, skin_far: bool = True) -> Correspondence:
    """Match canonical points q (N, 3) to the template surface; see `Correspondence`.

    skin_far=False: points beyond max_distance (invalid) are not searched for further than it
    and get joint 0 and an infinite distance, as non-finite points do; the valid ones are
    matched exactly as with skin_far. For callers that keep only valid points: a predictor's Q
    lies off the surface often, and the KD-tree's search for a far point's neighbours was most
    of a video frame's matching (3.6 against 1.6 ms for 600 points, docs/video.md)."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise DualPMError(f"correspondence: Q has shape {q.shape}, expected (N, 3)")
    if k < 1:
        raise DualPMError(f"correspondence: k={k} must be at least 1")
    if max_distance is None:
        max_distance = REJECT_FRACTION * index.body_length
    n = len(q)
    finite = np.all(np.isfinite(q), axis=1)
    dist = np.full((n, k), np.inf)
    idx = np.zeros((n, k), dtype=np.int64)
    if not skin_far and np.isfinite(max_distance) and np.any(finite):
        d0, i0 = index.tree.query(q[finite], k=1, distance_upper_bound=max_distance)
        near = np.nonzero(finite)[0][d0 <= max_distance]
        finite[np.nonzero(finite)[0][~(d0 <= max_distance)]] = False  # skinned as non-finite points
        if k == 1:
            dist[near, 0], idx[near, 0] = d0[d0 <= max_distance], i0[d0 <= max_distance]
        elif len(near):
            d, i = index.tree.query(q[near], k=k)
            dist[near], idx[near] = np.reshape(d, (-1, k)), np.reshape(i, (-1, k))
    elif np.any(finite):
        d, i = index.tree.query(q[finite], k=k)
        dist[finite] = np.reshape(d, (-1, k))
        idx[finite] = np.reshape(i, (-1, k))
    if k == 1:
        sj, sw = index.skin_joints[idx[:, 0]], index.skin_weights[idx[:, 0]]
    else:
        # Inverse-distance blend of the k samples' weights; the 1 mm floor keeps a point sitting
        # on a sample from taking an infinite weight.
        inv = 1.0 / np.maximum(dist, 1e-3)
        inv[~finite] = 0
        inv[~finite, 0] = 1
        inv /= inv.sum(axis=1, keepdims=True)
        j = index.num_joints
        flat = (np.arange(n)[:, None, None] * j + index.skin_joints[idx]).ravel()
        vals = (inv[:, :, None] * index.skin_weights[idx]).ravel()
        blended = np.bincount(flat, vals, minlength=n * j).reshape(n, j)
        sj, sw = _top4(blended)
    sj = np.where(finite[:, None], sj, np.array([0, 0, 0, 0]))
    sw = np.where(finite[:, None], sw, np.array([1.0, 0, 0, 0]))
    return Correspondence(
        valid=finite & (dist[:, 0] <= max_distance),
        distance=dist[:, 0],
        skin_joints=sj.astype(np.int64),
        skin_weights=sw.astype(np.float64),
        dominant=sj[:, 0].astype(np.int64),
        max_distance=float(max_distance),
    )
