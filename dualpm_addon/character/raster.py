"""Which triangle covers which pixel, with barycentrics: the texel map of a UV atlas and the
z-buffer of a mesh seen through a camera both come from here.

`cover` enumerates, for every triangle, the pixel centres (j + 0.5, i + 0.5) inside its 2D
bounding box and keeps those inside the triangle (edge functions, a small tolerance so that
neighbours sharing an edge leave no crack). All triangles at once, in chunks that bound the
memory, no per-triangle Python loop. `zbuffer` keeps the nearest triangle per pixel
(perspective-correct depth from the barycentrics of 1/z).
"""

from __future__ import annotations

import numpy as np

from .. import camera

CHUNK = 1 << 22  # candidate (triangle, pixel) pairs per pass: ~200 MB of temporaries at most
EPS = 1e-7  # barycentric slack: a centre on a shared edge belongs to both triangles
NEAR = 1e-6  # metres: triangles with a vertex this close to the camera plane are dropped


def cover(tri: np.ndarray, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixel, triangle, bary) for 2D triangles tri (T, 3, 2) in pixel units on an (H, W) grid.

    pixel (N,) flat index row * W + col; triangle (N,) index into tri; bary (N, 3) float64 with
    sum 1. A pixel inside several triangles appears once per triangle; degenerate triangles and
    non-finite ones cover nothing."""
    h, w = (int(s) for s in size)
    tri = np.asarray(tri, dtype=np.float64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    if not len(tri):
        return empty
    x, y = tri[..., 0], tri[..., 1]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    ok = np.isfinite(area) & (np.abs(area) > 1e-12)
    c0 = np.clip(np.ceil(np.where(ok, x.min(1), 0) - 0.5), 0, w)
    c1 = np.clip(np.floor(np.where(ok, x.max(1), -1) - 0.5), -1, w - 1)
    r0 = np.clip(np.ceil(np.where(ok, y.min(1), 0) - 0.5), 0, h)
    r1 = np.clip(np.floor(np.where(ok, y.max(1), -1) - 0.5), -1, h - 1)
    nx = np.maximum(c1 - c0 + 1, 0).astype(np.int64)
    ny = np.maximum(r1 - r0 + 1, 0).astype(np.int64)
    n = np.where(ok, nx * ny, 0)
    if not n.sum():
        return empty
    out_p, out_t, out_b = [], [], []
    ends = np.cumsum(n)
    start = 0
    while start < len(n):
        # Triangles start..stop together hold at most CHUNK candidates (one big one is alone).
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + CHUNK, side="right")), start + 1)
        sl = slice(start, stop)
        cnt = n[sl]
        t = np.repeat(np.arange(start, stop), cnt)
        local = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        col = c0[t].astype(np.int64) + local % np.maximum(nx[t], 1)
        row = r0[t].astype(np.int64) + local // np.maximum(nx[t], 1)
        px, py = col + 0.5, row + 0.5
        xt, yt = x[t], y[t]
        # Barycentrics from the signed areas of the sub-triangles opposite each corner.
        b1 = ((px - xt[:, 0]) * (yt[:, 2] - yt[:, 0]) - (xt[:, 2] - xt[:, 0]) * (py - yt[:, 0])) / area[t]
        b2 = ((xt[:, 1] - xt[:, 0]) * (py - yt[:, 0]) - (px - xt[:, 0]) * (yt[:, 1] - yt[:, 0])) / area[t]
        b0 = 1.0 - b1 - b2
        inside = (b0 >= -EPS) & (b1 >= -EPS) & (b2 >= -EPS)
        out_p.append((row * w + col)[inside])
        out_t.append(t[inside])
        out_b.append(np.stack([b0, b1, b2], 1)[inside])
        start = stop
    return np.concatenate(out_p), np.concatenate(out_t), np.concatenate(out_b)


def nearest(pixel: np.ndarray, depth: np.ndarray, count: int) -> np.ndarray:
    """(N,) bool: for each pixel index, the entries of least depth (all of a tie)."""
    if not len(pixel):
        return np.zeros(0, bool)
    best = np.full(int(count), np.inf)
    np.minimum.at(best, pixel, depth)
    return depth <= best[pixel]


def zbuffer(vertices_cam: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray, size):
    """(depth (H, W) float64, inf where empty; face (H, W) int64, -1 where empty; bary (H, W, 3)
    of the visible surface point, perspective-correct) of a camera-space mesh (OpenCV axes)
    through intrinsics (3, 3) on an (H, W) pixel grid."""
    h, w = (int(s) for s in size)
    v = np.asarray(vertices_cam, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    depth = np.full(h * w, np.inf)
    face = np.full(h * w, -1, np.int64)
    bary_out = np.zeros((h * w, 3))
    tri = v[f]
    front = np.all(tri[:, :, 2] > NEAR, axis=1) & np.all(np.isfinite(tri), axis=(1, 2))
    idx = np.nonzero(front)[0]
    if not len(idx):
        return depth.reshape(h, w), face.reshape(h, w), bary_out.reshape(h, w, 3)
    uv = camera.project(tri[idx], intrinsics)
    pix, t, bary = cover(uv, (h, w))
    # Depth is linear in 1/z across a projected triangle.
    z = 1.0 / np.sum(bary / tri[idx][t, :, 2], axis=1)
    keep = nearest(pix, z, h * w)
    depth[pix[keep]] = z[keep]
    face[pix[keep]] = idx[t[keep]]
    # Screen-space barycentrics over z, renormalised: the surface point's own barycentrics.
    persp = bary[keep] / tri[idx][t[keep], :, 2]
    bary_out[pix[keep]] = persp / persp.sum(1, keepdims=True)
    return depth.reshape(h, w), face.reshape(h, w), bary_out.reshape(h, w, 3)
