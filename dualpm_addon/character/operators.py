"""What the character's shape solve and its repair need from the template alone, built once per
template (`solver`, ~10 ms): the base mesh's thin-plate energy, the mirror operator, the Loop
map, the fine mesh's canonical search tree, edges, rings, facing pairs, the edge-face pairs the
crossing search tests and a Gaussian mean in space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from . import quality, subdivide
from .mesh import topology_and_mesh

ACROSS_RADIUS = 0.03  # body lengths: facing surfaces nearer than this move together
REPAIR_NEIGHBOURS = 32  # faces tested per edge in the repair's crossing search (quality.candidates)
SPREAD_RADIUS = 0.1  # body lengths: reach of Solver.spread, the instance repair's smoothing in space


@dataclass(frozen=True)
class Solver:
    """What depends on the template alone: base Laplacian energy, mirror operator, Loop map,
    the canonical tree of the fine welded vertices."""

    bending: sp.csr_matrix  # (B, B) L^T M^-1 L on the base canonical mesh (body length 1)
    mirror_x: sp.csr_matrix  # (B, B) (I + P)^T (I + P): x of a twin is minus x
    mirror_yz: sp.csr_matrix  # (B, B) (I - P)^T (I - P)
    subdivision: sp.csr_matrix  # (W, B)
    tree: cKDTree  # fine welded canonical positions
    fine_canonical: np.ndarray
    body_length: float
    across: sp.csr_matrix  # (B, B) coupling of facing surfaces a short way apart (thin parts, gaps)
    edges: np.ndarray  # (E, 2) the fine welded mesh's edges
    ring2: sp.csr_matrix  # (W, W) two-ring neighbourhood (with the vertex itself)
    repair_pairs: tuple  # (edge index, face index): the edge-face pairs untangle tests
    spread: sp.csr_matrix  # (W, W) Gaussian mean over canonical neighbours within SPREAD_RADIUS


def cotangent_laplacian(vertices: np.ndarray, faces: np.ndarray):
    """(C (V, V) symmetric, negative semi-definite cotangent matrix, areas (V,) barycentric)."""
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    n = len(v)
    rows, cols, vals = [], [], []
    area = np.zeros(n)
    tri = v[f]
    dbl = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    for k in range(3):
        i, j, o = f[:, (k + 1) % 3], f[:, (k + 2) % 3], f[:, k]
        a, b = v[i] - v[o], v[j] - v[o]
        cot = np.einsum("ij,ij->i", a, b) / np.maximum(dbl, 1e-12)
        rows += [i, j]
        cols += [j, i]
        vals += [0.5 * cot, 0.5 * cot]
        np.add.at(area, o, dbl / 6.0)
    c = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    c = c - sp.diags(np.asarray(c.sum(axis=1)).ravel())
    return c.tocsr(), area


_SOLVERS: dict = {}


def solver(template, levels: int | None = None) -> Solver:
    """The template's Solver, built once (~10 ms) and kept per template object."""
    from .mesh import LEVELS

    levels = LEVELS if levels is None else levels
    key = (id(template), levels)
    hit = _SOLVERS.get(key)
    if hit is not None and hit[0] is template:
        return hit[1]
    topo, mesh = topology_and_mesh(template, levels)
    blen = float(np.ptp(topo.base_canonical[:, 1]))
    c, area = cotangent_laplacian(topo.base_canonical / blen, topo.base_faces)
    bending = (c.T @ sp.diags(1.0 / np.maximum(area, 1e-12)) @ c).tocsr()
    b = len(topo.base_vertices)
    p = sp.csr_matrix((np.ones(b), (np.arange(b), topo.base_mirror)), shape=(b, b))
    eye = sp.identity(b, format="csr")
    edges = subdivide.edges(topo.fine_faces)[0]
    nf = mesh.num_welded
    fine_can = np.zeros((nf, 3))
    fine_can[mesh.weld] = mesh.canonical
    ring = sp.csr_matrix((np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(nf, nf))
    ring = ring + sp.identity(nf, format="csr")
    # Facing pairs: fine vertices a short way apart whose normals point at each other's side
    # (the two faces of an ear, the tail over the rump). Their displacements are tied together,
    # so a thin part moves as one and never folds through itself or into its neighbour.
    fine_faces = topo.fine_faces
    normals = vertex_normals(fine_can, fine_faces)
    pairs = cKDTree(fine_can).query_pairs(ACROSS_RADIUS * blen, output_type="ndarray")
    geodesic = (ring @ ring @ ring)[pairs[:, 0], pairs[:, 1]].A1 > 0  # three rings: neighbours anyway
    facing = np.einsum("ij,ij->i", normals[pairs[:, 0]], normals[pairs[:, 1]]) < -0.5
    pairs = pairs[facing & ~geodesic]
    dmat = sp.csr_matrix((np.r_[np.ones(len(pairs)), -np.ones(len(pairs))],
                          (np.r_[np.arange(len(pairs)), np.arange(len(pairs))], np.r_[pairs[:, 0], pairs[:, 1]])),
                         shape=(len(pairs), nf)) @ topo.subdivision
    across = (dmat.T @ dmat).tocsr() / max(len(pairs), 1) * b
    s = Solver(bending=bending, across=across, mirror_x=((eye + p).T @ (eye + p)).tocsr(),
               mirror_yz=((eye - p).T @ (eye - p)).tocsr(), subdivision=topo.subdivision,
               tree=cKDTree(fine_can), fine_canonical=fine_can, body_length=blen, edges=edges,
               ring2=(ring @ ring).tocsr(),
               repair_pairs=quality.candidates(fine_can, fine_faces, edges, REPAIR_NEIGHBOURS),
               spread=spread_operator(fine_can, SPREAD_RADIUS * blen))
    if len(_SOLVERS) >= 4:  # as mesh._CACHE: a few templates and densities, never growing
        _SOLVERS.pop(next(iter(_SOLVERS)))
    _SOLVERS[key] = (template, s)
    return s


def spread_operator(points: np.ndarray, radius: float) -> sp.csr_matrix:
    """(N, N) row-stochastic Gaussian mean (sigma radius / 2) over the points within `radius` in
    space, whatever the surface between them: a field it averages moves nearby sheets alike."""
    tree = cKDTree(points)
    d = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
    n = len(points)
    w = sp.csr_matrix((np.exp(-2.0 * (d.data / radius) ** 2), (d.row, d.col)), shape=(n, n))
    w = w + sp.identity(n, format="csr")  # the point itself (zero distances are not stored)
    return (sp.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w).tocsr()


def vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
