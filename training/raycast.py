"""Exact multi-hit ray casting: the amodal layers of a dual point map.

Embree (through `embreex`) finds the nearest triangle along each ray; we advance every ray past
its hit and cast again, vectorised over all rays still alive, until each ray has its K layers or
leaves the mesh. Embree works in float32, so every hit is re-solved in float64 (Moller-Trumbore
on the reported triangle and its edge neighbours): t, the barycentrics and the facing come from
that exact solve, P = origin + t * direction lies on the ray to float64 precision, and Q is the
same barycentric blend of the same triangle's canonical (rest) points.

The enter/exit rule (what a layer is)
-------------------------------------
A triangle's winding gives its normal n; a ray meets a *front* face where dot(d, n) < 0 and a
*back* face where dot(d, n) > 0. Our templates are closed and wound outward (tests check every
one), so front means entering the animal.

1. Coincident hits are one event. Hits on one ray closer together than `EPS_REL * t` (float64
   round-off), on a triangle and its edge neighbours, are one surface point: a ray through a
   shared edge meets both triangles at one t. Same facing: one crossing of that facing. Both
   facings (a ray through a silhouette edge): a touch, no crossing, no layer. Distinct surfaces
   are never merged: after an event the ray starts again `STEP_REL * t` beyond it (past float32
   round-off; triangles of the event met again are skipped by identity), and a neighbour hit
   within that step is a second event of its own (below).
2. The solid is every point the surface winds around: the winding number w, 0 outside, goes +1
   at a front face and -1 at a back face, and the solid is where w != 0. A layer is recorded
   where the ray crosses the solid's boundary: an *entry* where w leaves 0, an *exit* where it
   returns to 0. Crossings between two nonzero values are surfaces inside the solid (a horn's
   base buried in the head, a leg pushed into the body by skinning) and are dropped.
3. Open parts and sheets. `topology` caps every closed boundary loop (the bull's and cow's horns
   are open at the base, inside the head), removes double-sided zero-thickness sheets (a
   triangle and its reversed twin) and then any small piece that is still not closed (the
   stag's tail tuft: four triangles hanging off edges shared three ways; at most FRAGMENT_MAX
   of the area), so that w is well defined everywhere.

Consequences the tests check: kept layers strictly alternate entry, exit, entry, exit... (layer 0
is always an entry) and their distances strictly increase. Where a mesh folds through itself
inside out (a pocket with w = -1: the alpaca's rest mesh has one at a hind leg) the pocket is
solid too, and its entry is a back face: `Hits.front` says entry/exit of the solid, `Hits.facing`
the triangle's side. Two surfaces closer than float32 can separate (a ray grazing a ridge meets
both faces microns apart) are resolved in float64 as two events of the same pass (`Hits.close`
counts them), in their order along the ray. Known limit: a ray through a mesh *vertex* exactly
only sees the fan triangles that are edge neighbours of Embree's pick (a set of measure zero);
if Embree reports a hit that the float64 solve rejects there, the reported triangle is used,
barycentrics clamped (`Hits.fallbacks`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dualpm_addon.errors import DualPMError

EPS_REL = 1e-9  # hits this close along the ray (relative to the distance) are one point
EPS_ABS = 1e-12
STEP_REL = 2e-7  # after an event the ray starts again this far beyond it: past float32 round-off
STEP_ABS = 1e-9
LOOSE_REL = 1e-5  # how far Embree's float32 distance may be from the float64 one
BARY_TOL = 1e-9  # a hit this close outside a triangle's edge still counts (shared edges)
FRAGMENT_MAX = 0.005  # open pieces up to this share of the surface area are removed


# ------------------------------------------------------------------------------------------------
# Mesh topology (once per template)

@dataclass(frozen=True)
class Topology:
    """What ray casting needs from a template mesh, computed once per template.

    Baked meshes repeat a vertex along UV and normal seams; casting uses one vertex per position
    (welded) so that shared edges are exact and neighbours are known. Two repairs make the
    surface a closed solid, which the winding rule needs: double-sided zero-thickness sheets (a
    triangle and its reversed twin enclose no volume; rule 1 would make them a touch anyway) are
    removed, and every boundary loop (an open part: the bull's horns) is capped with a fan of
    triangles around the loop's centroid, wound to match its rim.

    Two vertex tables: *welded* (U unique positions, then one centroid per cap) for casting and
    shading, and *extended* (the V original vertices, then the cap centroids) for values that
    may differ across a seam; `ext_faces` and `faces` list the same triangles in each.
    """

    num_vertices: int  # V, original vertices
    representative: np.ndarray  # (U,) one original vertex per welded position
    cap_matrix: np.ndarray  # (C, U) rows average a loop's welded vertices: the cap centroids
    faces: np.ndarray  # (F', 3) int32 over the welded table (kept faces in order, then caps)
    ext_faces: np.ndarray  # (F', 3) the same triangles over the extended table
    source_face: np.ndarray  # (F',) original face of each triangle (a cap: a face on its rim)
    is_cap: np.ndarray  # (F',) bool
    neighbours: np.ndarray  # (F', M) int32 triangles sharing an edge, -1 padded
    removed_sheets: int = 0  # triangles removed as zero-thickness sheets
    removed_fragments: int = 0  # triangles of small pieces still open after capping

    def weld(self, values: np.ndarray) -> np.ndarray:
        """Per-original-vertex values (V, ...) -> the welded table (U + C, ...)."""
        w = np.asarray(values, dtype=np.float64)[self.representative]
        return np.concatenate([w, np.tensordot(self.cap_matrix, w, axes=1)]) if len(self.cap_matrix) else w

    def add_caps(self, welded: np.ndarray) -> np.ndarray:
        """Values already on the U welded positions -> (U + C, ...)."""
        w = np.asarray(welded, dtype=np.float64)
        return np.concatenate([w, np.tensordot(self.cap_matrix, w, axes=1)]) if len(self.cap_matrix) else w

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Per-original-vertex values (V, ...) -> the extended table (V + C, ...)."""
        v = np.asarray(values, dtype=np.float64)
        if not len(self.cap_matrix):
            return v
        return np.concatenate([v, np.tensordot(self.cap_matrix, v[self.representative], axes=1)])


def _edge_pairs(faces: np.ndarray, nv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (3F, 2), owning face (3F,), and undirected key (3F,)."""
    e = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2)
    owner = np.repeat(np.arange(len(faces)), 3)
    lo, hi = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    return e, owner, lo * (nv + 1) + hi


def _neighbours(faces: np.ndarray, nv: int) -> np.ndarray:
    nf = len(faces)
    _, owner, key = _edge_pairs(faces, nv)
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if nf else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(key)])
    two = starts[sizes == 2]  # manifold edges, the usual case, vectorised
    pairs = [np.stack([owner[two], owner[two + 1]], 1), np.stack([owner[two + 1], owner[two]], 1)]
    for s, g in zip(starts[sizes > 2], sizes[sizes > 2]):  # non-manifold edges: every pair
        a, b = np.meshgrid(owner[s:s + g], owner[s:s + g], indexing="ij")
        pairs.append(np.stack([a[a != b], b[a != b]], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    counts = np.bincount(pairs[:, 0], minlength=nf)
    nb = np.full((nf, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int32)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    nb[pairs[:, 0], np.arange(len(pairs)) - first[pairs[:, 0]]] = pairs[:, 1]
    return nb


def _boundary_loops(faces: np.ndarray, nv: int) -> list[tuple[list[int], list[int]]]:
    """Loops of edges used by one face only, as (vertex chain in face order, rim faces)."""
    e, owner, key = _edge_pairs(faces, nv)
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    single = cnt[inv] == 1
    nxt = {}
    for (a, b), f in zip(e[single].tolist(), owner[single].tolist()):
        nxt.setdefault(a, []).append((b, f))
    loops = []
    while nxt:
        a0 = min(nxt)
        chain, rim, a = [], [], a0
        while a in nxt:
            b, f = nxt[a].pop()
            if not nxt[a]:
                del nxt[a]
            chain.append(a)
            rim.append(f)
            a = b
            if a == a0:
                break
        if a == a0 and len(chain) >= 3:  # open chains (through non-manifold edges) are not capped
            loops.append((chain, rim))
    return loops


def topology(vertices: np.ndarray, faces: np.ndarray) -> Topology:
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or not len(faces):
        raise DualPMError(f"raycast: mesh has vertices {vertices.shape} and faces {faces.shape}; "
                          "expected (V, 3) and (F >= 1, 3)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise DualPMError("raycast: a face refers to a vertex that does not exist")
    nv = len(vertices)
    _, rep, inv = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    wf = inv[faces]
    nu = len(rep)

    # Zero-thickness sheets: a triangle whose reverse twin (same corners, other winding) exists.
    _, grp, gcnt = np.unique(np.sort(wf, axis=1), axis=0, return_inverse=True, return_counts=True)
    grp = grp.reshape(-1)
    lead = np.argmin(wf, axis=1)
    rows = np.arange(len(wf))
    even = wf[rows, (lead + 1) % 3] < wf[rows, (lead + 2) % 3]  # orientation up to rotation
    keep = np.ones(len(wf), dtype=bool)
    for g in np.flatnonzero(gcnt > 1):
        members = np.flatnonzero(grp == g)
        pos, neg = members[even[members]], members[~even[members]]
        n = min(len(pos), len(neg))
        keep[pos[:n]] = keep[neg[:n]] = False  # twin pairs enclose nothing
        rest = pos[n:] if len(pos) > n else neg[n:]
        keep[rest[1:]] = False  # same-winding copies: one is enough
    kept = np.flatnonzero(keep)

    loops = _boundary_loops(wf[kept], nu)
    cap_matrix = np.zeros((len(loops), nu))
    ext, src, weld = [faces[kept]], [kept], [wf[kept]]
    for c, (chain, rim) in enumerate(loops):
        cap_matrix[c, chain] = 1.0 / len(chain)
        a = np.asarray(chain)
        b = np.roll(a, -1)
        # A rim face runs a -> b, so the cap runs b -> a: one consistent orientation.
        weld.append(np.stack([b, a, np.full(len(a), nu + c)], 1))
        ext.append(np.stack([rep[b], rep[a], np.full(len(a), nv + c)], 1))
        src.append(kept[np.asarray(rim)])
    faces_w = np.concatenate(weld).astype(np.int64)
    ext_faces = np.concatenate(ext).astype(np.int64)
    source = np.concatenate(src).astype(np.int64)
    is_cap = np.zeros(len(faces_w), dtype=bool)
    is_cap[len(kept):] = True

    # Whatever is still not closed (edges used once, or three ways) has no inside: remove such
    # pieces when they are small fragments (the stag's tail tuft), never a real part of the body.
    nt = nu + len(loops)
    _, owner, key = _edge_pairs(faces_w, nt)
    _, ek, cnt = np.unique(key, return_inverse=True, return_counts=True)
    bad_face = np.zeros(len(faces_w), dtype=bool)
    bad_face[owner[cnt[ek] != 2]] = True
    removed = 0
    if bad_face.any():
        from scipy.sparse import coo_matrix  # noqa: PLC0415
        from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

        # Pieces are joined only across manifold edges, so a fin hanging off the body by edges
        # it shares three ways is a piece of its own.
        order = np.argsort(ek, kind="stable")
        pairs = np.stack([owner[order][:-1], owner[order][1:]], 1)
        pairs = pairs[(np.diff(ek[order]) == 0) & (cnt[ek[order]][1:] == 2)]
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(faces_w),) * 2)
        _, comp = connected_components(graph, directed=False)
        tri = np.concatenate([vertices[rep], np.zeros((len(loops), 3))])[faces_w]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        comp_area = np.bincount(comp, weights=area)
        drop = np.isin(comp, np.unique(comp[bad_face])) & (comp_area[comp] < FRAGMENT_MAX * area.sum())
        removed = int(drop.sum())
        faces_w, ext_faces, source, is_cap = faces_w[~drop], ext_faces[~drop], source[~drop], is_cap[~drop]
    return Topology(num_vertices=nv, representative=rep.astype(np.int64), cap_matrix=cap_matrix,
                    faces=faces_w.astype(np.int32), ext_faces=ext_faces, source_face=source, is_cap=is_cap,
                    neighbours=_neighbours(faces_w, nt), removed_sheets=int((~keep).sum()),
                    removed_fragments=removed)


# ------------------------------------------------------------------------------------------------
# Embree

_DEVICE: tuple[int, object] | None = None


def _device():
    """One Embree device per process: a device made before fork() must not be used after it."""
    global _DEVICE
    if _DEVICE is None or _DEVICE[0] != os.getpid():
        from embreex import rtcore  # noqa: PLC0415 - training-only dependency

        _DEVICE = (os.getpid(), rtcore.EmbreeDevice())
    return _DEVICE[1]


def make_scene(vertices: np.ndarray, faces: np.ndarray):
    """An Embree scene over one triangle mesh (robust mode: no cracks along shared edges)."""
    from embreex import rtcore_scene  # noqa: PLC0415
    from embreex.mesh_construction import TriangleMesh  # noqa: PLC0415

    scene = rtcore_scene.EmbreeScene(_device(), robust=True)
    TriangleMesh(scene, np.ascontiguousarray(vertices, dtype=np.float32),
                 np.ascontiguousarray(faces, dtype=np.int32))
    return scene


# ------------------------------------------------------------------------------------------------
# Casting

@dataclass
class Hits:
    """The first `layers` boundary crossings of each ray (see the module docstring)."""

    face: np.ndarray  # (L, N) int32 triangle index, -1 where the ray has no such layer
    t: np.ndarray  # (L, N) float64 distance in units of |direction|, inf where none
    bary: np.ndarray  # (L, N, 3) float64 weights of the triangle's vertices 0, 1, 2
    front: np.ndarray  # (L, N) bool, True for an entry into the solid
    facing: np.ndarray  # (L, N) bool, True where the triangle is a front face
    internal: int = 0  # crossings dropped as inside the solid (rule 2)
    touches: int = 0  # coincident events with both facings (rule 1)
    fallbacks: int = 0  # Embree hits the float64 solve rejected
    close: int = 0  # separate surfaces found within one step of another event (second events)
    passes: int = 0

    @property
    def occupied(self) -> np.ndarray:
        return self.face >= 0


NEAR_EDGE = 1e-3  # Embree barycentric below which a hit may also meet the edge neighbours


def _cross(a, b):
    # np.cross is several times slower than this on small trailing axes.
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                     a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _solve(frame, cand, org, d):
    """Float64 Moller-Trumbore of rays (n, 3) against candidate triangles (n, m).

    `frame` holds v0, e1 = v1 - v0, e2 = v2 - v0 per triangle, (F, 3, 3). Returns t (n, m),
    weights (n, m, 3), det (n, m; > 0 for a front face), `ok` (a real, non-degenerate
    candidate) and `inside` (the ray meets the triangle, within BARY_TOL)."""
    f = frame[np.maximum(cand, 0)]
    v0, e1, e2 = f[..., 0, :], f[..., 1, :], f[..., 2, :]
    dd = np.broadcast_to(d[:, None, :], e2.shape)
    p = _cross(dd, e2)
    det = np.sum(e1 * p, axis=-1)
    ok = (np.abs(det) > 1e-300) & (cand >= 0)
    inv = 1.0 / np.where(ok, det, 1.0)
    s = -v0 if org is None else org[:, None, :] - v0
    u = np.sum(s * p, axis=-1) * inv
    q = _cross(s, e1)
    v = np.sum(dd * q, axis=-1) * inv
    t = np.sum(e2 * q, axis=-1) * inv
    w = np.stack([1.0 - u - v, u, v], axis=-1)
    inside = ok & (u >= -BARY_TOL) & (v >= -BARY_TOL) & (u + v <= 1.0 + BARY_TOL)
    return t, w, det, ok, inside


def _solve1(frame, prim, org, d):
    """`_solve` for one candidate per ray, component-wise (the common case; several times faster
    than the general form, which pays for its extra axis)."""
    f = frame[prim]
    v0x, v0y, v0z = f[:, 0, 0], f[:, 0, 1], f[:, 0, 2]
    e1x, e1y, e1z = f[:, 1, 0], f[:, 1, 1], f[:, 1, 2]
    e2x, e2y, e2z = f[:, 2, 0], f[:, 2, 1], f[:, 2, 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
    det = e1x * px + e1y * py + e1z * pz
    ok = np.abs(det) > 1e-300
    inv = 1.0 / np.where(ok, det, 1.0)
    if org is None:
        sx, sy, sz = -v0x, -v0y, -v0z
    else:
        sx, sy, sz = org[:, 0] - v0x, org[:, 1] - v0y, org[:, 2] - v0z
    u = (sx * px + sy * py + sz * pz) * inv
    qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (e2x * qx + e2y * qy + e2z * qz) * inv
    w = np.empty((len(prim), 3))
    w[:, 0], w[:, 1], w[:, 2] = 1.0 - u - v, u, v
    inside = ok & (u >= -BARY_TOL) & (v >= -BARY_TOL) & (u + v <= 1.0 + BARY_TOL)
    return t, w, det, ok, inside


def _events(frame, neighbours, prim, t_e, oa, da, near, done, start):
    """Resolve hits into events (rule 1) for rays (n,): crossing (+1 entry side, -1, 0 touch),
    the event's distance, weights and triangle, the triangles it covers, counters, and for the
    few rays with one a second event: a separate surface (a neighbour) less than one step away,
    closer than float32 can separate, which the next cast could miss.

    Rays whose hit is not near an edge of the reported triangle (most) take a short path: that
    triangle alone decides. Near an edge its neighbours are solved as well."""
    n = len(prim)
    width = 1 + neighbours.shape[1]
    t, w, det, ok, inside = _solve1(frame, prim, oa, da)
    crossing = np.where(det > 0, 1, -1)
    t_ref, cw, cf = t.copy(), w.copy(), prim.copy()
    same = np.full((n, width), -1, dtype=np.int64)
    same[:, 0] = prim
    fb = ~inside  # a hit the float64 solve rejects: the reported triangle, clamped (below)
    extra = np.zeros(n, dtype=bool)
    ex_cross, ex_t, ex_w, ex_f = np.zeros(n, np.int64), np.zeros(n), np.zeros((n, 3)), np.zeros(n, np.int64)
    touches = 0
    sub = np.flatnonzero(near)
    if len(sub):
        cand = np.concatenate([prim[sub, None], neighbours[prim[sub]]], axis=1)
        st, sw, sdet, _, sin = _solve(frame, cand, None if oa is None else oa[sub], da[sub])
        te = t_e[sub, None]
        loose = sin & (np.abs(st - te) <= LOOSE_REL * np.abs(te) + STEP_ABS)
        # The event's distance: the reported triangle's, or (float64 says the ray passes just
        # outside it) the nearest neighbour that Embree should have reported.
        ref = np.where(sin[:, 0], st[:, 0], np.min(np.where(loose, st, np.inf), axis=1))
        sfb = ~np.isfinite(ref)
        ref = np.where(sfb, st[:, 0], ref)
        coincide = sin & (np.abs(st - ref[:, None]) <= EPS_REL * np.abs(ref[:, None]) + EPS_ABS)
        anyf = np.any(coincide & (sdet > 0), axis=1)
        anyb = np.any(coincide & (sdet < 0), axis=1)
        # The event's point: the most interior coincident candidate of its facing.
        want = np.where((anyf & ~anyb)[:, None], sdet > 0, sdet < 0)
        pick = np.argmax(np.where(coincide & want, sw.min(axis=-1), -np.inf), axis=1)
        r = np.arange(len(sub))
        crossing[sub] = anyf.astype(np.int64) - anyb.astype(np.int64)
        t_ref[sub], cw[sub], cf[sub] = st[r, pick], sw[r, pick], cand[r, pick]
        fb[sub] = sfb
        crossing[sub[sfb]] = np.where(sdet[sfb, 0] > 0, 1, -1)
        t_ref[sub[sfb]] = st[sfb, 0]
        cf[sub[sfb]] = prim[sub[sfb]]
        touches = int(np.sum(anyf & anyb))
        # A separate surface within one step (before or after), not met in the last event.
        step = (STEP_REL * np.abs(ref) + STEP_ABS)[:, None]
        seen = np.any(cand[:, :, None] == done[sub][:, None, :], axis=2)
        close = sin & ~coincide & ~seen & (np.abs(st - ref[:, None]) <= step) & (st >= start[sub, None] - step)
        close[sfb] = False
        j = np.argmin(np.where(close, st, np.inf), axis=1)
        has = close[r, j]
        rows = sub[has]
        extra[rows] = True
        ex_cross[rows] = np.where(sdet[r[has], j[has]] > 0, 1, -1)
        ex_t[rows], ex_w[rows], ex_f[rows] = st[r[has], j[has]], sw[r[has], j[has]], cand[r[has], j[has]]
        same[sub] = np.where(coincide, cand, -1)
        same[rows, j[has]] = cand[r[has], j[has]]
        same[sub, 0] = prim[sub]  # the reported triangle, always: it must not count again
    if np.any(fb):
        wc = np.clip(w[fb], 0.0, None)
        cw[fb] = wc / np.maximum(wc.sum(axis=1, keepdims=True), 1e-300)
    return (crossing, t_ref, cw, cf, same, int(fb.sum()), touches), (extra, ex_cross, ex_t, ex_w, ex_f)


def _apply(stats, layers, ids, count, filled, cross, t, w, f, face, tt, bary, front, facing, rows):
    """Apply one event per ray (or per ray in `rows`): the winding rule decides which crossings
    are layers (rule 2); kept ones go to the output slots. Returns the new count and filled."""
    if rows is not None:
        sub_count, sub_filled = _apply(stats, layers, ids[rows], count[rows], filled[rows], cross[rows], t[rows],
                                       w[rows], f[rows], face, tt, bary, front, facing, None)
        count, filled = count.copy(), filled.copy()
        count[rows], filled[rows] = sub_count, sub_filled
        return count, filled
    keep = (cross != 0) & ((count == 0) | (count + cross == 0)) & (filled < layers)
    stats["internal"] += int(np.count_nonzero((cross != 0) & (count != 0) & (count + cross != 0)))
    kr, slot = ids[keep], filled[keep]
    face[slot, kr] = f[keep]
    tt[slot, kr] = t[keep]
    bary[slot, kr] = w[keep]
    front[slot, kr] = count[keep] == 0
    facing[slot, kr] = cross[keep] > 0
    return count + cross, filled + keep


def cast(vertices: np.ndarray, faces: np.ndarray, directions: np.ndarray, layers: int,
         origins: np.ndarray | None = None, neighbours: np.ndarray | None = None, scene=None,
         max_passes: int | None = None) -> Hits:
    """The first `layers` boundary crossings along each ray, near to far (module docstring).

    vertices (U, 3) and faces (F, 3) should be welded and closed (`topology`); directions (N, 3)
    need not be unit length (t is in units of |direction|); origins default to zero (camera
    space). `neighbours` defaults to the mesh's own edge neighbours.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    n = len(d)
    if layers < 1:
        raise DualPMError(f"raycast: layers must be at least 1, got {layers}")
    o = None if origins is None else np.ascontiguousarray(np.broadcast_to(np.asarray(origins, np.float64), d.shape))
    if neighbours is None:
        neighbours = _neighbours(faces, len(vertices))
    if scene is None:
        scene = make_scene(vertices, faces)
    max_passes = 4 * layers + 16 if max_passes is None else max_passes
    tri = vertices[faces]
    frame = np.stack([tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], axis=1)

    face = np.full((layers, n), -1, dtype=np.int32)
    tt = np.full((layers, n), np.inf)
    bary = np.zeros((layers, n, 3))
    front = np.zeros((layers, n), dtype=bool)
    facing = np.zeros((layers, n), dtype=bool)
    # State of the rays still alive, kept compact so that each pass touches only those.
    ids = np.arange(n)
    oa, da, d32 = o, d, d.astype(np.float32)
    start = np.zeros(n)  # distance from which the next cast begins
    count = np.zeros(n, dtype=np.int64)  # winding number
    filled = np.zeros(n, dtype=np.int64)
    done = np.full((n, 1 + neighbours.shape[1]), -1, dtype=np.int64)  # triangles of the last event
    stats = dict(internal=0, touches=0, fallbacks=0, close=0)
    passes = 0
    while len(ids) and passes < max_passes:
        passes += 1
        if oa is None:  # camera space: rays from the origin
            org = np.zeros(d32.shape, np.float32) if passes == 1 else (start[:, None] * da).astype(np.float32)
        else:
            org = (oa + start[:, None] * da).astype(np.float32)
        res = scene.run(org, d32, output=1)
        prim = res["primID"]
        hit = prim >= 0
        if not hit.all():
            ids, da, d32, start, count, filled, done = (x[hit] for x in (ids, da, d32, start, count, filled, done))
            oa = None if oa is None else oa[hit]
        if not len(ids):
            break
        prim = prim[hit].astype(np.int64)
        t_e = start + res["tfar"][hit].astype(np.float64)
        eu, ev = res["u"][hit], res["v"][hit]
        near = np.minimum(np.minimum(eu, ev), 1.0 - eu - ev) < NEAR_EDGE
        # A triangle of the last event met again (float32 round-off): step past it, no crossing.
        again = np.any(done == prim[:, None], axis=1)
        (crossing, t_ref, cw, cf, same, fb, touches), (extra, ex_cross, ex_t, ex_w, ex_f) = _events(
            frame, neighbours, prim, t_e, oa, da, near & ~again, done, start)
        crossing[again] = 0
        stats["fallbacks"] += fb
        stats["touches"] += touches
        stats["close"] += int(extra.sum())
        # Up to two events per ray this pass, applied in their order along the ray. The second
        # event is rare (a surface closer than float32 separates), so it is handled apart.
        rows = np.flatnonzero(extra)
        swap = rows[ex_t[rows] < t_ref[rows]]
        main = [crossing, t_ref, cw, cf]
        ex = [ex_cross, ex_t, ex_w, ex_f]
        for a, b in zip(main, ex):  # swapped rows: the extra event comes first
            a[swap], b[swap] = b[swap].copy(), a[swap].copy()
        count, filled = _apply(stats, layers, ids, count, filled, *main, face, tt, bary, front, facing, None)
        if len(rows):
            count, filled = _apply(stats, layers, ids, count, filled, *ex, face, tt, bary, front, facing, rows)
        done = np.where(again[:, None], done, same)
        ref = np.where(again, t_e, np.where(extra, np.maximum(t_ref, ex_t), t_ref))
        start = ref + STEP_REL * np.abs(ref) + STEP_ABS
        more = filled < layers
        if not more.all():
            ids, da, d32, start, count, filled, done = (x[more] for x in (ids, da, d32, start, count, filled, done))
            oa = None if oa is None else oa[more]
    return Hits(face=face, t=tt, bary=bary, front=front, facing=facing, passes=passes, **stats)


def first_hits(scene, directions: np.ndarray, origins: np.ndarray | None = None):
    """The nearest hit of each ray straight from Embree (float32): triangle (-1 for none), t and
    barycentric weights. For shading, where float32 is plenty; layer 0 of `cast` is the same
    triangle except on measure-zero touches."""
    d = np.asarray(directions, dtype=np.float32).reshape(-1, 3)
    o = np.zeros_like(d) if origins is None else np.asarray(origins, dtype=np.float32).reshape(-1, 3)
    res = scene.run(o, d, output=1)
    u, v = res["u"].astype(np.float64), res["v"].astype(np.float64)
    return res["primID"].astype(np.int64), res["tfar"].astype(np.float64), np.stack([1 - u - v, u, v], axis=1)


# ------------------------------------------------------------------------------------------------
# Dual point map targets

def interpolate(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric blend of per-vertex values (V, C) at hits (...,) -> (..., C); 0 where face < 0."""
    out = np.zeros(face.shape + (values.shape[1],))
    sel = face >= 0
    f, b = face[sel], bary[sel]
    tri = faces[f]
    out[sel] = b[:, 0:1] * values[tri[:, 0]] + b[:, 1:2] * values[tri[:, 1]] + b[:, 2:3] * values[tri[:, 2]]
    return out


def pixel_box(vertices_cam: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
              margin: float = 1.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel range that can see the mesh: rays outside it miss for sure.

    The whole image when part of the mesh is at or behind the camera plane."""
    v = np.asarray(vertices_cam, dtype=np.float64)
    if not len(v) or np.any(v[:, 2] <= 1e-9):
        return 0, 0, width, height
    k = np.asarray(intrinsics, dtype=np.float64)
    u = k[0, 0] * v[:, 0] / v[:, 2] + k[0, 1] * v[:, 1] / v[:, 2] + k[0, 2]
    w = k[1, 1] * v[:, 1] / v[:, 2] + k[1, 2]
    x0 = int(np.clip(np.floor(u.min() - margin), 0, width))
    x1 = int(np.clip(np.ceil(u.max() + margin), 0, width))
    y0 = int(np.clip(np.floor(w.min() - margin), 0, height))
    y1 = int(np.clip(np.ceil(w.max() + margin), 0, height))
    return x0, y0, max(x0, x1), max(y0, y1)


def pixel_rays(intrinsics: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(y1-y0, x1-x0, 3) ray directions (z = 1) through the pixel centres of `box` (x0, y0, x1, y1):
    the same numbers as dualpm_addon.camera.pixel_rays on that part of the image, built by
    broadcasting one row and one column instead of a full grid."""
    k = np.asarray(intrinsics, dtype=np.float64)
    x0, y0, x1, y1 = box
    y = ((np.arange(y0, y1) + 0.5) - k[1, 2]) / k[1, 1]
    x = ((np.arange(x0, x1) + 0.5)[None, :] - k[0, 2] - k[0, 1] * y[:, None]) / k[0, 0]
    out = np.empty((y1 - y0, x1 - x0, 3))
    out[..., 0] = x
    out[..., 1] = y[:, None]
    out[..., 2] = 1.0
    return out


def cast_pixels(welded: np.ndarray, topo: Topology, intrinsics: np.ndarray, height: int, width: int,
                layers: int, scene=None) -> tuple[Hits, np.ndarray, np.ndarray]:
    """Cast through the pixel centres of a camera at the origin that can see the mesh.

    Returns the hits (layers, n) of those n rays, their flat pixel indices (n,) into H*W, and
    their directions (n, 3) with z = 1. Pixels outside the mesh's projected box are not cast
    (`expand` spreads the hits over the whole grid)."""
    if scene is None:
        scene = make_scene(welded, topo.faces)
    x0, y0, x1, y1 = pixel_box(welded, intrinsics, height, width)
    d = pixel_rays(intrinsics, (x0, y0, x1, y1)).reshape(-1, 3)
    pixels = (np.arange(y0, y1)[:, None] * width + np.arange(x0, x1)[None, :]).reshape(-1)
    hits = cast(welded, topo.faces, d, layers, neighbours=topo.neighbours, scene=scene)
    return hits, pixels, d


def expand(hits: Hits, pixels: np.ndarray, n: int) -> Hits:
    """Hits over n pixels from hits over the cast subset `pixels` (empty elsewhere)."""
    layers = hits.face.shape[0]
    out = Hits(face=np.full((layers, n), -1, dtype=np.int32), t=np.full((layers, n), np.inf),
               bary=np.zeros((layers, n, 3)), front=np.zeros((layers, n), dtype=bool),
               facing=np.zeros((layers, n), dtype=bool), internal=hits.internal, touches=hits.touches,
               fallbacks=hits.fallbacks, close=hits.close, passes=hits.passes)
    for name in ("face", "t", "bary", "front", "facing"):
        getattr(out, name)[:, pixels] = getattr(hits, name)
    return out


def point_maps(vertices_cam: np.ndarray, canonical_ext: np.ndarray, topo: Topology,
               intrinsics: np.ndarray, height: int, width: int, layers: int,
               welded: np.ndarray | None = None, scene=None, compact: bool = False) -> dict:
    """P, Q, occupancy, confidence (DESIGN.md shapes) and "hits", for a mesh in camera space.

    "hits" covers every pixel (layers, H*W); with compact=True only the rays actually cast, whose
    flat pixel indices are then in "pixels" (cheaper: the synthesizer's path).

    vertices_cam (V, 3): the posed template mesh in the camera's OpenCV frame (or pass `welded`,
    already `topo.weld`ed); canonical_ext: `topo.extend(template.canonical_vertices)`; topo:
    `topology(template.vertices, template.faces)`. Rays leave the camera centre through every
    pixel centre; P = t * d lies on the ray (d.z = 1, so P.z = t) and Q blends the canonical
    points of the same triangle with the same barycentrics. Empty layers hold zeros.
    """
    welded = topo.weld(vertices_cam) if welded is None else welded
    hits, pixels, d = cast_pixels(welded, topo, intrinsics, height, width, layers, scene=scene)
    occ = hits.occupied
    n = height * width
    p = np.zeros((layers, n, 3), dtype=np.float32)
    q = np.zeros((layers, n, 3), dtype=np.float32)
    occupancy = np.zeros((layers, n), dtype=np.float32)
    for k in range(layers):
        o = occ[k]
        if not o.any():
            continue
        pix = pixels[o]
        p[k, pix] = hits.t[k, o][:, None] * d[o]
        q[k, pix] = interpolate(canonical_ext, topo.ext_faces, hits.face[k, o], hits.bary[k, o])
        occupancy[k, pix] = 1.0
    shape = (layers, height, width)
    return {
        "P": p.reshape(shape + (3,)),
        "Q": q.reshape(shape + (3,)),
        "occupancy": occupancy.reshape(shape),
        "confidence": np.ones(shape, dtype=np.float32),
        "intrinsics": np.asarray(intrinsics, dtype=np.float32),
        "hits": hits if compact else expand(hits, pixels, n),
        **({"pixels": pixels} if compact else {}),
    }
