"""The light in a photo of the character, fitted so that the bake can take it out.

Model (the synthesizer's light, and a sunny day's): the photo's colour at a surface point is its
albedo times a shading

    S(n, p) = 1 + a . n + k * max(0, n . l) * lit(p)

(up to one overall factor) with n the camera-space normal; 1 + a . n the sky and the ground, a
light that varies slowly over directions (|a| <= MAX_AMBIENT_SLOPE: neither is negative); l the
unit direction towards the sun, k >= 0 its strength against the sky's; lit(p) 0 where the posed
mesh itself stands between p and the sun (a cast shadow), else 1. `lit` is a shadow map: the
mesh z-buffered along l by an orthographic projection (character/raster.py's `cover`), a point
lit when nothing in the map lies nearer the sun than it does.

The fit (`estimate`) is in the gradient domain (the Retinex idea): a coat's albedo is piecewise
smooth (one colour per region, patches and stripes with edges), the light changes where the
surface turns or a shadow falls. So the fit compares texels a few texels apart in the atlas
(`pairs`, on the same chart): the difference of their log luminance is the difference of their
log shading, except across an albedo edge, which a Cauchy loss ignores. Unlike a fit of the
log luminance itself, a coat whose colour follows the normal (a darker back, a pale belly) is
not read as light, and under even light the fit finds none (k and a near zero). Saturated
texels (a channel at the photo's white) say nothing about the light and are left out.

Steps: a first-order fit of the differences (d log Y ~ b . d n, Cauchy-reweighted) says roughly
where the light comes from and how much it varies (`first_spread`, the 10th-90th percentile
range of b . n over the seen texels: the bake's `auto` gate, cheap, so even light costs little);
SPHERE sun directions over the whole sphere and b's are each fitted (a, k) without shadows on a
sample of the pairs, at one Cauchy scale so that their costs compare; the SHORTLIST best again
with their cast shadows (a coarse shadow map of the vertices); the best is refined (a, k, l) by
Gauss-Newton (Levenberg damped) on FIT_PAIRS pairs, twice, its shadows recomputed between.
What it measured against the synthesizer's sun: docs/character.md (Colours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import raster

SHADOW_SIDE = 256  # shadow map side in pixels over the mesh's extent seen from the sun
SHADOW_TOLERANCE = 0.015  # of the mesh's size: nearer the sun than this counts as an occluder
SHADOW_SLOPE = 2.0  # map pixels of depth per unit of the surface's slope towards the light
MAX_AMBIENT_SLOPE = 0.9  # |a|: the brightest ambient at most 19 times the darkest
LUMA = np.array([0.2126, 0.7152, 0.0722])


def _frame(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to l and to each other."""
    a = np.array([1.0, 0.0, 0.0]) if abs(l[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(l, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(l, e1)


def lit(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, towards: np.ndarray,
        side: int = SHADOW_SIDE, normals: np.ndarray | None = None, tolerance: float = SHADOW_TOLERANCE,
        slope: float = SHADOW_SLOPE, splat: bool = False) -> np.ndarray:
    """(N,) bool: nothing of the mesh (vertices (V, 3), faces (F, 3)) lies between each point
    (N, 3) and a light infinitely far in the unit direction `towards` (3,), by a shadow map of
    side pixels over the mesh seen from the light. Points off the map are lit. `splat`: the map
    holds the vertices alone, not the triangles (a coarse map, for a search: a dense mesh's
    vertices fill a map whose pixels are wider than its edges)."""
    l = np.asarray(towards, dtype=np.float64)
    l = l / max(np.linalg.norm(l), 1e-12)
    v = np.asarray(vertices, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if not len(p) or not len(v):
        return np.ones(len(p), bool)
    e1, e2 = _frame(l)
    xy = np.stack([v @ e1, v @ e2], 1)
    lo = xy.min(0)
    extent = max(float(np.ptp(xy, axis=0).max()), 1e-9)
    px = side / extent  # pixels per metre
    uv = (xy - lo) * px
    depth_v = -(v @ l)  # distance travelled by the light: larger is farther from the sun
    best = np.full((side + 1) ** 2, np.inf)
    f = np.asarray(faces, dtype=np.int64)
    if splat:
        ij = np.minimum(uv.astype(np.int64), side)
        np.minimum.at(best, ij[:, 1] * (side + 1) + ij[:, 0], depth_v)
        f = f[:0]
    # Only faces turned towards the light can be nearest it on a closed surface: half the work.
    # Which way is out comes from the signed volume; an open or inconsistent mesh keeps them all.
    cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    volume = float(np.sum(cr * v[f[:, 0]])) / 6.0
    box = float(np.prod(np.maximum(np.ptp(v, axis=0), 1e-9)))
    if abs(volume) > 0.05 * box:
        f = f[np.sign(volume) * (cr @ l) > 0]
    pix, t, bary = raster.cover(uv[f], (side + 1, side + 1))
    if len(pix):
        np.minimum.at(best, pix, np.einsum("nk,nk->n", bary, depth_v[f[t]]))
    q = (np.stack([p @ e1, p @ e2], 1) - lo) * px
    col, row = np.floor(q[:, 0]).astype(np.int64), np.floor(q[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col <= side) & (row >= 0) & (row <= side)
    size = float(np.linalg.norm(np.ptp(v, axis=0)))
    tol = tolerance * size + 1.5 / px
    if normals is not None:  # a surface grazing the light changes depth fast across a map pixel
        cos = np.clip(np.abs(np.asarray(normals) @ l), 0.05, 1.0)
        tol = tol + slope / px * np.sqrt(1 - cos ** 2) / cos
    occluder = np.full(len(p), np.inf)
    occluder[inside] = best[row[inside] * (side + 1) + col[inside]]
    return ~(occluder < -(p @ l) - tol)


def pairs(pixel: np.ndarray, size: int, points: np.ndarray, strides=(3, 8)) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs of texels (pixel (N,) flat atlas indices, points (N, 3) on the surface)
    `stride` texels apart along a row or a column of the atlas and near each other on the surface
    (so not across a chart's border)."""
    slot = np.full(size * size, -1, np.int64)
    slot[pixel] = np.arange(len(pixel))
    row, col = pixel // size, pixel % size
    out_i, out_j = [], []
    for s in strides:
        for dr, dc in ((0, s), (s, 0)):
            r2, c2 = row + dr, col + dc
            ok = (r2 < size) & (c2 < size)
            j = np.full(len(pixel), -1, np.int64)
            j[ok] = slot[r2[ok] * size + c2[ok]]
            i = np.nonzero(j >= 0)[0]
            out_i.append(i)
            out_j.append(j[i])
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    if not len(i):
        return i, j
    d = np.linalg.norm(points[i] - points[j], axis=1)
    step = np.concatenate([np.full(len(a), s, float) for a, s in zip(out_i, [s for s in strides for _ in (0, 1)])])
    unit = np.median(d / step)
    keep = d <= 2.0 * step * unit
    return i[keep], j[keep]


def _model(n, a, k, l, vis):
    ndl = n @ l
    return np.maximum(1.0 + n @ a + k * np.maximum(ndl, 0.0) * vis, 0.05), ndl


def _jacobian(n, s, ndl, k, l, vis, move_l):
    """(N, P) d log S / d (a, k[, l's two tangent directions])."""
    cols = [n[:, 0] / s, n[:, 1] / s, n[:, 2] / s, np.maximum(ndl, 0) * vis / s]
    if move_l:
        e1, e2 = _frame(l)
        on = (ndl > 0) * vis * k / s
        cols += [on * (n @ e1), on * (n @ e2)]
    return np.stack(cols, 1)


def refine(dy, ni, nj, vi, vj, weight, l, scale, a=None, k=1.0, iters=6, move_l=True):
    """Gauss-Newton (Levenberg damped, Cauchy weights at `scale`, the same for every start so
    that their costs compare) on texel pairs: dy (P,) = log Y_i - log Y_j ~ log S_i - log S_j,
    normals ni, nj (P, 3), lit vi, vj (P,) of each pair's ends. (a, k, l, robust cost)."""
    a = np.zeros(3) if a is None else np.asarray(a, dtype=np.float64).copy()
    l = np.asarray(l, dtype=np.float64) / np.linalg.norm(l)

    def resid(a, k, l):
        si, di = _model(ni, a, k, l, vi)
        sj, dj = _model(nj, a, k, l, vj)
        return dy - np.log(si / sj), (si, di, sj, dj)

    def cost(r):
        return float(np.sum(weight * np.log1p((r / scale) ** 2)))

    r, m = resid(a, k, l)
    c0 = cost(r)
    lam = 1e-3
    for _ in range(iters):
        w = weight / (1.0 + (r / scale) ** 2)
        si, di, sj, dj = m
        jac = _jacobian(ni, si, di, k, l, vi, move_l) - _jacobian(nj, sj, dj, k, l, vj, move_l)
        jw = jac * w[:, None]
        h, g = jw.T @ jac, jw.T @ r
        moved = False
        for _ in range(5):
            step = np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-9), g)
            a2, k2 = a + step[:3], max(k + step[3], 0.0)
            na = np.linalg.norm(a2)
            if na > MAX_AMBIENT_SLOPE:  # sky and ground never negative: 1 + a . n > 0
                a2 = a2 * (MAX_AMBIENT_SLOPE / na)
            l2 = l
            if move_l:
                e1, e2 = _frame(l)
                l2 = l + step[4] * e1 + step[5] * e2
                l2 = l2 / np.linalg.norm(l2)
            r2, m2 = resid(a2, k2, l2)
            c2 = cost(r2)
            if c2 <= c0:
                a, k, l, r, m, c0 = a2, k2, l2, r2, m2, c2
                lam = max(lam / 3, 1e-7)
                moved = True
                break
            lam *= 10
        if not moved:
            break
    return a, k, l, c0


SEARCH_SIDE = 64  # the search's shadow maps (of the vertices alone)
SPHERE = 24  # sun directions tried over the whole sphere
SHORTLIST = 3  # of them tried again with their cast shadows
SEARCH_PAIRS = 3000  # pairs the direction search fits on
FIT_PAIRS = 16000  # pairs the best direction is refined on
SATURATED = 0.97  # linear: a texel with a channel above this is clipped by the photo


@dataclass
class Light:
    """A fitted light (module docstring). `spread`: the fitted log shading's range over the seen
    texels (10th to 90th percentile); `shadowed`: the share of the seen texels facing the sun
    but in a cast shadow; `pairs`: how many texel pairs the fit used."""

    a: np.ndarray
    k: float
    l: np.ndarray
    spread: float = 0.0
    shadowed: float = 0.0
    first_spread: float = 0.0
    pairs: int = 0

    def figures(self) -> dict:
        return {"sun_direction": [round(float(x), 3) for x in self.l], "sun_strength": round(float(self.k), 3),
                "sky_slope": [round(float(x), 3) for x in self.a], "spread": round(float(self.spread), 3),
                "shadowed": round(float(self.shadowed), 3), "first_spread": round(float(self.first_spread), 3),
                "pairs": int(self.pairs)}


def _sphere(count: int) -> np.ndarray:
    """(count, 3) unit vectors spread evenly over the sphere (a Fibonacci lattice)."""
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    r = np.sqrt(1 - z * z)
    t = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([r * np.cos(t), r * np.sin(t), z], 1)


def estimate(colour: np.ndarray, normal: np.ndarray, weight: np.ndarray, points: np.ndarray, pixel: np.ndarray,
             size: int, vertices: np.ndarray, faces: np.ndarray,
             min_spread: float = 0.0) -> tuple[Light, np.ndarray] | None:
    """(the fitted Light, S (N,) its shading at the texels, weighted mean 1) from the photo's
    linear colours (N, 3) at N seen texels with camera-space normals (N, 3) facing the camera,
    weights (N,), posed surface points (N, 3) and atlas pixels (N,) of an atlas `size` texels a
    side; vertices (V, 3) and faces (F, 3) the posed mesh that casts the shadows. None when too
    few texel pairs are seen together to say anything. When the first-order fit's spread is under
    `min_spread` the search is skipped and the Light is flat (k = 0, S = 1): the `auto` gate."""
    colour = np.asarray(colour, dtype=np.float64)
    n = np.asarray(normal, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    y = np.log(np.maximum(colour @ LUMA, 1e-4))
    usable = weight * (colour.max(1) < SATURATED)
    pi, pj = pairs(np.asarray(pixel), int(size), p)
    if len(pi) < 50:
        return None
    pw = np.minimum(usable[pi], usable[pj])
    keep = pw > 0
    pi, pj, pw = pi[keep], pj[keep], pw[keep]
    if len(pi) < 50:
        return None
    dy = y[pi] - y[pj]
    scale = max(1.4826 * float(np.median(np.abs(dy))), 0.02)
    # Where the light comes from, roughly: d log Y ~ b . d n, robust.
    dn = n[pi] - n[pj]
    w = pw.copy()
    for _ in range(4):
        sw = np.sqrt(w)
        b, *_ = np.linalg.lstsq(dn * sw[:, None], dy * sw, rcond=None)
        w = pw / (1.0 + ((dy - dn @ b) / scale) ** 2)
    if not np.all(np.isfinite(b)):
        b = np.zeros(3)
    lb = n @ b
    first_spread = float(np.percentile(lb, 90) - np.percentile(lb, 10))
    l0 = b if np.linalg.norm(b) > 1e-9 else -np.mean(n, axis=0)  # no gradient: towards the camera
    l0 = l0 / max(np.linalg.norm(l0), 1e-12)
    if first_spread < min_spread:  # no light worth a search: the flat shading
        return Light(a=np.zeros(3), k=0.0, l=l0, spread=0.0, first_spread=first_spread, pairs=int(len(pi))), \
            np.ones(len(n))
    order = np.random.default_rng(0).permutation(len(pi))
    search, fit = order[:SEARCH_PAIRS], order[:FIT_PAIRS]
    i, j = pi[search], pj[search]
    ones = np.ones(len(search))
    tried = []
    for cand in [l0, *_sphere(SPHERE)]:  # every direction, without shadows: cheap
        a, k, _, c = refine(dy[search], n[i], n[j], ones, ones, pw[search], cand, scale, iters=3, move_l=False)
        tried.append((c, cand, a, k))
    tried.sort(key=lambda t: t[0])
    best = None
    for _, cand, a, k in tried[:SHORTLIST]:  # the best few again with their cast shadows
        vis = lit(p, vertices, faces, cand, side=SEARCH_SIDE, normals=n, splat=True).astype(np.float64)
        a, k, _, c = refine(dy[search], n[i], n[j], vis[i], vis[j], pw[search], cand, scale, a=a, k=k, iters=3,
                            move_l=False)
        if best is None or c < best[3]:
            best = (a, k, cand, c)
    a, k, l, _ = best
    i, j = pi[fit], pj[fit]
    for _ in range(2):
        vis = lit(p, vertices, faces, l, normals=n).astype(np.float64)
        a, k, l, _ = refine(dy[fit], n[i], n[j], vis[i], vis[j], pw[fit], l, scale, a=a, k=k, iters=5)
    vis = lit(p, vertices, faces, l, normals=n).astype(np.float64)
    s, ndl = _model(n, a, k, l, vis)
    s = s / np.average(s, weights=np.maximum(weight, 1e-12))
    ls = np.log(s)
    facing = ndl > 0
    light = Light(a=a, k=float(k), l=l, spread=float(np.percentile(ls, 90) - np.percentile(ls, 10)),
                  first_spread=first_spread,
                  shadowed=float(np.average(facing & (vis == 0), weights=np.maximum(weight, 1e-12))),
                  pairs=int(len(pi)))
    return light, s

