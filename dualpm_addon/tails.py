"""Tails carried into Q by the mesh, not by the bones.

A tail's bones do not always follow its skin: the shiba's tail curls over its back while all three
of its tail heads sit within 7 cm of the root, and the stag's is a stub skinned to one bone. A
map built from bone frames cannot tell where along such a tail a vertex is. The mesh can: the
geodesic distance from where the tail leaves the body, over the tail's own surface, grows from
root to tip whatever the rigger did. So a tail vertex is described by

    t       its geodesic distance from the root, as a fraction of the tail's longest (0 root, 1 tip)
    offset  its position relative to the tail's centreline at t, in a frame that follows the
            centreline (Y along it, X the animal's left, Z = X x Y)

and goes into Q at the same t and the same offset on the reference's tail, the offset scaled by
the ratio of the two tails' cross-section radii at t. `canonical.py` blends this with the bone
maps by each vertex's tail skin weight, so the body-to-tail seam stays continuous.

The low-poly meshes are flat shaded (every face has its own vertices), so vertices are welded by
position before walking the surface.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TAIL_ROOT = "Tail1"
_BINS = 12  # centreline samples along the tail
_WELD = 1e-5  # metres: vertices closer than this are one surface point


@dataclasses.dataclass(frozen=True)
class TailCurve:
    """A tail's centreline sampled at _BINS values of t, with its moving frames and radii."""
    t: np.ndarray  # (B,) sample positions in [0, 1]
    centre: np.ndarray  # (B, 3)
    frames: np.ndarray  # (B, 3, 3) columns X (left), Y (along the tail), Z
    radii: np.ndarray  # (B, 2) RMS offset along X and Z
    length: float  # arc length of the centreline, metres


def tail_bones(skeleton) -> np.ndarray:
    """Indices of the tail root and every bone below it (empty for a tail-less rig)."""
    if TAIL_ROOT not in skeleton.joint_names:
        return np.zeros(0, dtype=np.int64)
    root = skeleton.index(TAIL_ROOT)
    return np.array([root] + skeleton.descendants(root), dtype=np.int64)


def tail_weight(template) -> np.ndarray:
    """(V,) each vertex's total skin weight on the tail bones (0 for a tail-less rig)."""
    on_tail = np.isin(template.skin_joints, tail_bones(template.skeleton))
    return np.where(on_tail, template.skin_weights, 0.0).sum(axis=1)


def _weld(vertices: np.ndarray, faces: np.ndarray):
    """(index of each vertex's welded point, welded points, welded faces)."""
    keys = np.round(vertices / _WELD).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    return inverse, vertices[first], inverse[faces]


def tail_coordinate(template) -> np.ndarray:
    """(V,) t of every vertex with tail skin weight (NaN elsewhere): `tail_distance` divided by
    its largest value."""
    d = tail_distance(template)
    if not np.any(d > 0):
        return np.where(np.isfinite(d), 0.0, np.nan)
    return d / np.nanmax(d)


def tail_distance(template) -> np.ndarray:
    """(V,) metres: geodesic distance of every vertex with tail skin weight (NaN elsewhere) over
    the welded tail surface from the vertices where the tail meets the body."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    w = tail_weight(template)
    out = np.full(len(template.vertices), np.nan)
    if not np.any(w > 0):
        return out
    inverse, pts, faces = _weld(template.vertices, template.faces)
    n = len(pts)
    in_tail = np.zeros(n, bool)
    in_tail[inverse[w > 0]] = True
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    # walk only over the tail and its border with the body
    touches = in_tail[edges].any(axis=1)
    edges = edges[touches]
    length = np.linalg.norm(pts[edges[:, 0]] - pts[edges[:, 1]], axis=1)
    graph = coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    border = np.unique(edges[~in_tail[edges]])
    if len(border) == 0 and np.any(~in_tail):  # a tail that is its own mesh island: start from
        tail = np.nonzero(in_tail)[0]          # its point nearest the body
        gap = np.linalg.norm(pts[tail, None] - pts[None, ~in_tail], axis=2).min(axis=1)
        border = tail[[np.argmin(gap)]]
    elif len(border) == 0:  # nothing but tail
        border = np.nonzero(in_tail)[0][:1]
    d = dijkstra(graph, directed=False, indices=border, min_only=True)
    d[~in_tail] = np.nan
    reach = np.isfinite(d)
    if not np.any(reach):
        return out
    d[in_tail & ~reach] = np.max(d[reach])  # unreachable islands (hair tufts) count as the tip
    out[w > 0] = d[inverse[w > 0]]
    return out


def _frame(tangent: np.ndarray) -> np.ndarray:
    """Columns X (the animal's left, +X, made normal to the tangent), Y (tangent), Z."""
    y = tangent / max(np.linalg.norm(tangent), 1e-12)
    x = np.array([1.0, 0.0, 0.0]) - y * y[0]
    if np.linalg.norm(x) < 1e-6:  # a tail pointing sideways: fall back to up
        x = np.array([0.0, 0.0, 1.0]) - y * y[2]
    x /= np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def tail_curve(template, t: np.ndarray | None = None) -> TailCurve | None:
    """The centreline of a template's tail (None without a tail), from its welded tail vertices
    weighted by a Gaussian in t, so that flat-shaded duplicates do not count twice."""
    t = tail_coordinate(template) if t is None else t
    has = np.isfinite(t)
    if np.count_nonzero(has) < 8:
        return None
    inverse, pts, _ = _weld(template.vertices, template.faces)
    tw = np.full(len(pts), np.nan)
    tw[inverse[has]] = t[has]
    keep = np.isfinite(tw)
    pts, tw = pts[keep], tw[keep]
    samples = np.linspace(0.0, 1.0, _BINS)
    sigma = 1.0 / _BINS
    k = np.exp(-0.5 * ((tw[None, :] - samples[:, None]) / sigma) ** 2)  # (B, n)
    k /= k.sum(axis=1, keepdims=True)
    centre = k @ pts
    tangents = np.gradient(centre, samples, axis=0)
    frames = np.stack([_frame(g) for g in tangents])
    local = np.einsum("bji,bnj->bni", frames, pts[None] - centre[:, None])  # (B, n, 3)
    radii = np.sqrt(np.einsum("bn,bnc->bc", k, local[..., [0, 2]] ** 2))
    length = float(np.linalg.norm(np.diff(centre, axis=0), axis=1).sum())
    return TailCurve(samples, centre, frames, np.maximum(radii, 1e-6), length)


def _at(curve: TailCurve, t: np.ndarray):
    """Centre, frame and radii of `curve` interpolated at each t (frames re-orthonormalised)."""
    f = np.clip(t, 0.0, 1.0) * (len(curve.t) - 1)
    i = np.minimum(f.astype(int), len(curve.t) - 2)
    a = (f - i)[:, None]
    centre = (1 - a) * curve.centre[i] + a * curve.centre[i + 1]
    radii = (1 - a) * curve.radii[i] + a * curve.radii[i + 1]
    tangent = (1 - a) * curve.frames[i, :, 1] + a * curve.frames[i + 1, :, 1]
    frames = np.stack([_frame(g) for g in tangent]) if len(t) else np.zeros((0, 3, 3))
    return centre, frames, radii


def carry_tail(points: np.ndarray, t: np.ndarray, species: TailCurve, reference: TailCurve,
               ratio: float) -> np.ndarray:
    """Points (N, 3) of a species' tail at tail coordinates t (N,) -> the same place on the
    reference's tail. Cross-section offsets scale by the radius ratio at t (kept within
    [0.4, 2.5] x the body-size `ratio`); the offset along the tail by the tails' length ratio."""
    cs, fs, rs = _at(species, t)
    cr, fr, rr = _at(reference, t)
    local = np.einsum("nji,nj->ni", fs, points - cs)
    scale = np.clip(rr / rs, 0.4 * ratio, 2.5 * ratio)
    along = reference.length / max(species.length, 1e-9)
    local = local * np.stack([scale[:, 0], np.full(len(t), along), scale[:, 1]], axis=1)
    return cr + np.einsum("nij,nj->ni", fr, local)
