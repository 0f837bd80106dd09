"""One UV atlas in canonical space, the animal's right side a mirror image of its left.

Charts: the faces of the left half (+X) are grouped by body part (the part of the bone that
skins them most, fitting.rig.PARTS, ears apart from the head) and by the axis their canonical
normal faces most (+-X, +-Y, +-Z); each connected group is one chart, projected orthographically
along its axis. A face is never more than 54.7 degrees from its chart's axis, so no projected
triangle folds over, and the stretch stays under 1/cos(54.7) = 1.7 across a chart. Tiny charts
join the neighbouring chart whose axis suits them best. All charts share one texel density
(canonical metres to UV) and are shelf-packed into the left half of the atlas, u < 0.5.

The right half (+X mirrored to -X) takes the same charts mirrored: a right face's UVs are its
left twin's with u -> 1 - u. So mirror twins meet the same atlas position reflected across
u = 0.5, and a texture of the hidden side is its twin's side flipped left to right. Vertices
are split wherever the chart changes (UV seams) and along the midline (left and right copies).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..fitting.rig import PARTS
from .subdivide import edges

# (t1, t2) UV axes per projection axis, with t1 x t2 = the axis, so outward faces keep their
# counter-clockwise winding in UV.
_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
_TANGENTS = np.array([[[0, 1, 0], [0, 0, 1]], [[0, -1, 0], [0, 0, 1]], [[-1, 0, 0], [0, 0, 1]],
                      [[1, 0, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, -1, 0]]], dtype=np.float64)
MIN_CHART_FACES = 12
PADDING = 0.006  # UV units between charts: 3 texels at 512, 6 at 1024 (room for the bake's dilation)
MIDDLE_GAP = 0.01  # UV units between the left half and its mirror


def face_parts(skeleton, faces: np.ndarray, skin_joints: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """(F,) chart part of each face: the PARTS index of the bone with the most weight over its
    corners; ears get a part of their own (len(PARTS)), bones of no part the trunk."""
    names = list(skeleton.joint_names)
    part_of = np.full(len(names), [p for p, (n, _) in enumerate(PARTS) if n == "trunk"][0])
    for j, name in enumerate(names):
        for p, (_, prefixes) in enumerate(PARTS):
            if name.startswith(prefixes):
                part_of[j] = p
                break
        if name.startswith("Ear"):
            part_of[j] = len(PARTS)
    nparts = len(PARTS) + 1
    per_vertex = np.zeros((len(skin_joints), nparts))
    np.add.at(per_vertex, (np.repeat(np.arange(len(skin_joints)), skin_joints.shape[1]),
                           part_of[skin_joints].ravel()), skin_weights.ravel())
    return np.argmax(per_vertex[faces].sum(axis=1), axis=1)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def _face_adjacency(faces: np.ndarray) -> np.ndarray:
    """(P, 2) pairs of faces that share an edge (closed manifold: each edge gives one pair)."""
    _, side_edge = edges(faces)
    flat = side_edge.ravel()
    order = np.argsort(flat, kind="stable")
    e_sorted = flat[order]
    face_of = order // 3
    same = e_sorted[1:] == e_sorted[:-1]
    return np.stack([face_of[:-1][same], face_of[1:][same]], axis=1)


def charts(canonical: np.ndarray, faces: np.ndarray, parts: np.ndarray):
    """(F,) chart id and (C,) projection axis per chart, for one half's faces."""
    normals = face_normals(canonical, faces)
    score = normals @ _AXES.T
    axis = np.argmax(score, axis=1)
    adj = _face_adjacency(faces)
    for _ in range(4):  # tiny groups (a few faces at a corner) join a neighbour that suits them
        label = _components(len(faces), adj, parts * 6 + axis)
        size = np.bincount(label)[label]
        small = size < MIN_CHART_FACES
        if not small.any():
            break
        a, b = np.concatenate([adj[:, 0], adj[:, 1]]), np.concatenate([adj[:, 1], adj[:, 0]])
        ok = small[a] & (parts[a] == parts[b]) & (size[b] > size[a])
        cand = score[a[ok], axis[b[ok]]]
        good = cand > 0.35  # under 70 degrees from the neighbour's axis: still no fold
        best = np.full(len(faces), -np.inf)
        new_axis = axis.copy()
        np.maximum.at(best, a[ok][good], cand[good])
        hit = good.copy()
        hit[good] = cand[good] >= best[a[ok][good]]
        new_axis[a[ok][hit]] = axis[b[ok][hit]]
        if np.array_equal(new_axis, axis):
            break
        axis = new_axis
    label = _components(len(faces), adj, parts * 6 + axis)
    chart_axis = np.zeros(label.max() + 1, dtype=np.int64)
    chart_axis[label] = axis
    return label, chart_axis


def _components(n: int, adj: np.ndarray, key: np.ndarray) -> np.ndarray:
    keep = key[adj[:, 0]] == key[adj[:, 1]]
    a = sp.coo_matrix((np.ones(int(keep.sum())), (adj[keep, 0], adj[keep, 1])), shape=(n, n))
    _, label = sp.csgraph.connected_components(a, directed=False)
    return label


def _pack(sizes: np.ndarray, width: float, height: float, padding: float):
    """Shelf packing of boxes (C, 2) scaled by one factor: (scale, offsets (C, 2)), the largest
    scale (to 1 %) at which every box fits in width x height with `padding` around each."""
    order = np.argsort(-sizes[:, 1], kind="stable")

    def place(scale):
        off = np.zeros_like(sizes)
        x = y = shelf = 0.0
        for c in order:
            w, h = sizes[c] * scale
            if x + w + padding > width and x > 0:
                x, y, shelf = 0.0, y + shelf + padding, 0.0
            off[c] = (x + padding, y + padding)
            x += w + padding
            shelf = max(shelf, h)
        return off, y + shelf + 2 * padding <= height and bool(np.all(off[:, 0] + sizes[:, 0] * scale <= width))

    lo, hi = 0.0, 1.0 / max(float(sizes.max()), 1e-9)
    while place(hi)[1]:
        lo, hi = hi, 2 * hi
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if place(mid)[1] else (lo, mid)
        if hi - lo < 0.01 * lo:
            break
    return lo, place(lo)[0]


def layout(canonical: np.ndarray, faces: np.ndarray, parts: np.ndarray):
    """UVs of one half: (corner_uv (F, 3, 2) in [0, 0.5 - gap/2] x [0, 1], chart (F,))."""
    label, chart_axis = charts(canonical, faces, parts)
    tri = canonical[faces]  # (F, 3, 3)
    t = _TANGENTS[chart_axis[label]]  # (F, 2, 3)
    local = np.einsum("fcx,fkx->fck", tri, t)  # (F, 3, 2)
    nc = len(chart_axis)
    lo = np.full((nc, 2), np.inf)
    hi = np.full((nc, 2), -np.inf)
    np.minimum.at(lo, label, local.min(axis=1))
    np.maximum.at(hi, label, local.max(axis=1))
    scale, off = _pack(hi - lo, 0.5 - MIDDLE_GAP / 2, 1.0, PADDING)
    uv = (local - lo[label][:, None]) * scale + off[label][:, None]
    return uv, label


def split_by_corner(corner_keys: np.ndarray):
    """Unique vertex per distinct (welded vertex, chart) corner key (F*3, 2): (index (F, 3) into
    the split vertices, first (V,) a corner that holds each one)."""
    _, first, inverse = np.unique(corner_keys, axis=0, return_index=True, return_inverse=True)
    return inverse.ravel(), first
