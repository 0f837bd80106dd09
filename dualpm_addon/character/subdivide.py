"""Welding and Loop subdivision of a closed triangle mesh, as sparse linear maps.

The baked template is split per face (flat colours), so it is welded first: vertices at the same
position become one, which gives the closed, manifold topology that subdivision and the shape
solve need. Loop subdivision (Loop 1987) is then one sparse matrix S (V_fine x V_coarse): every
per-vertex quantity (rest positions, canonical positions Q, dense skin weights) is carried by the
same S, so Q and the weights stay consistent with the positions, and a displacement solved on the
coarse mesh is carried to the fine one smoothly by the same product. Child faces keep their
parent's material.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import DualPMError

WELD_TOLERANCE = 1e-5  # metres: the baked template's duplicated corners agree to ~1e-7


def weld(vertices: np.ndarray, faces: np.ndarray, tolerance: float = WELD_TOLERANCE):
    """(welded_vertices (W, 3), welded_faces (F, 3), index (V,)): vertices within `tolerance`
    (on a grid of that pitch) become one; index maps each input vertex to its welded one."""
    v = np.asarray(vertices, dtype=np.float64)
    key = np.round(v / tolerance).astype(np.int64)
    _, first, index = np.unique(key, axis=0, return_index=True, return_inverse=True)
    index = index.ravel()
    return v[first], index[np.asarray(faces, dtype=np.int64)], index


def edges(faces: np.ndarray):
    """(E, 2) unique undirected edges (sorted pairs) and (F, 3) the edge index of each face
    side: side s of face f joins its corners s and s+1."""
    f = np.asarray(faces, dtype=np.int64)
    sides = np.stack([f, np.roll(f, -1, axis=1)], axis=-1).reshape(-1, 2)
    unique, inverse = np.unique(np.sort(sides, axis=1), axis=0, return_inverse=True)
    return unique, inverse.reshape(-1, 3)


def edge_face_counts(faces: np.ndarray) -> np.ndarray:
    """(E,) how many faces share each unique edge; a closed 2-manifold has 2 everywhere."""
    e, side_edge = edges(faces)
    return np.bincount(side_edge.ravel(), minlength=len(e))


def check_closed_manifold(faces: np.ndarray, source: str = "mesh") -> None:
    counts = edge_face_counts(faces)
    if counts.size == 0 or np.any(counts != 2):
        bad = int(np.sum(counts != 2))
        raise DualPMError(f"{source}: not a closed manifold ({bad} edges are not shared by exactly two faces)")


def loop_matrix(faces: np.ndarray, num_vertices: int):
    """(S (V + E, V) sparse, fine_faces (4F, 3), parent (4F,)): one Loop step of a closed
    manifold triangle mesh. Rows 0..V-1 are the moved old vertices, rows V.. one per edge."""
    f = np.asarray(faces, dtype=np.int64)
    check_closed_manifold(f, "subdivide")
    nv = int(num_vertices)
    e, side_edge = edges(f)
    ne = len(e)
    # Odd (edge) vertices: 3/8 of the edge's ends, 1/8 of the two opposite corners.
    opposite = np.roll(f, 1, axis=1)  # the corner opposite side s (corners s, s+1) is s+2 = s-1
    rows = [np.repeat(nv + np.arange(ne), 2), nv + side_edge.ravel()]
    cols = [e.ravel(), opposite.ravel()]
    vals = [np.full(2 * ne, 3.0 / 8.0), np.full(side_edge.size, 1.0 / 8.0)]
    # Even (old) vertices: Loop's beta over the one-ring.
    valence = np.bincount(e.ravel(), minlength=nv).astype(np.float64)
    n = np.maximum(valence, 1)
    beta = (5.0 / 8.0 - (3.0 / 8.0 + 0.25 * np.cos(2 * np.pi / n)) ** 2) / n
    rows += [e[:, 0], e[:, 1], np.arange(nv)]
    cols += [e[:, 1], e[:, 0], np.arange(nv)]
    vals += [beta[e[:, 0]], beta[e[:, 1]], 1.0 - valence * beta]
    s = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nv + ne, nv))
    m = nv + side_edge  # the edge vertex on side s of each face
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab, bc, ca = m[:, 0], m[:, 1], m[:, 2]
    fine = np.stack([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                     np.stack([ab, bc, ca], 1)], axis=1).reshape(-1, 3)
    parent = np.repeat(np.arange(len(f)), 4)
    return s, fine, parent


def subdivide(faces: np.ndarray, num_vertices: int, levels: int = 1):
    """(S (V_fine, V) sparse, fine faces, parent (F_fine,) index into the input faces) after
    `levels` Loop steps (0: the identity)."""
    if levels < 0:
        raise DualPMError(f"subdivide: levels must be >= 0, got {levels}")
    s = sp.identity(int(num_vertices), format="csr")
    f = np.asarray(faces, dtype=np.int64)
    parent = np.arange(len(f))
    for _ in range(int(levels)):
        step, f, p = loop_matrix(f, s.shape[0])
        s = (step @ s).tocsr()
        parent = parent[p]
    return s, f, parent
