"""The silhouette of a camera-space triangle mesh: which pixels its projected surface covers.

`rasterize` marks pixel (row i, column j) when its centre (j + 0.5, i + 0.5) lies inside the
projection of some triangle (camera.py's convention: OpenCV axes, intrinsics in pixels, skew
honoured). Pure numpy, scanline: for every triangle and every pixel row whose centre line
crosses it, the span of covered pixel centres on that row is one (start, stop) pair; all spans go
into a per-row difference array (+1 at the start, -1 after the stop) whose running sum along the
row is the coverage. The work is one small array per (triangle, row) pair plus one H x W cumulative
sum, with no per-triangle Python loop, so a template mesh (~2-9k faces) fills 1024 x 1024 in a few
milliseconds (benchmarks/bench_rig_iou.py measures it).

Triangles with a vertex at z <= 1e-6 (on or behind the camera) are skipped, not clipped: a rig in
front of the camera has none, and a mesh through the camera plane has no meaningful silhouette.
Triangles with a non-finite vertex are skipped too. Only coverage is computed (no depth), so
winding, back faces and overlaps do not matter.
"""

from __future__ import annotations

import numpy as np

from . import camera
from .errors import DualPMError

NEAR = 1e-6  # metres: a vertex this close to (or behind) the camera plane drops its triangle


def _check(vertices_cam, faces, intrinsics, size):
    v = np.asarray(vertices_cam, dtype=np.float64)
    f = np.asarray(faces)
    k = np.asarray(intrinsics, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise DualPMError(f"rasterize: vertices have shape {v.shape}, expected (V, 3)")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and not np.issubdtype(f.dtype, np.integer)):
        raise DualPMError(f"rasterize: faces have shape {f.shape} ({f.dtype}), expected integer (F, 3)")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise DualPMError(f"rasterize: faces index vertices 0..{len(v) - 1} but hold {f.min()}..{f.max()}")
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise DualPMError(f"rasterize: intrinsics have shape {k.shape}, expected a finite (3, 3)")
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise DualPMError(f"rasterize: size {size!r} is not (H, W)") from None
    if h <= 0 or w <= 0:
        raise DualPMError(f"rasterize: size {(h, w)} is empty")
    return v, f.astype(np.int64, copy=False), k, h, w


def rasterize(vertices_cam: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray, size) -> np.ndarray:
    """(H, W) bool: the pixels whose centres the projected triangles cover.

    vertices_cam (V, 3) camera space (OpenCV, metres); faces (F, 3) vertex indices; intrinsics
    (3, 3) in pixels, pixel centres at integer + 0.5; size (H, W)."""
    v, f, k, h, w = _check(vertices_cam, faces, intrinsics, size)
    out = np.zeros((h, w), dtype=bool)
    if not len(f):
        return out
    tri = v[f]  # (F, 3, 3)
    ok = np.all(np.isfinite(tri), axis=(1, 2)) & np.all(tri[:, :, 2] > NEAR, axis=1)
    if not ok.any():
        return out
    uv = camera.project(tri[ok], k)  # (T, 3, 2)
    x, y = uv[..., 0], uv[..., 1]

    # Rows whose centre line y = r + 0.5 meets the triangle's y range, clipped to the image.
    r0 = np.maximum(np.ceil(y.min(axis=1) - 0.5), 0)
    r1 = np.minimum(np.floor(y.max(axis=1) - 0.5), h - 1)
    # Triangles wholly left or right of the image cover nothing.
    n = np.where((x.max(axis=1) >= 0) & (x.min(axis=1) <= w), np.maximum(r1 - r0 + 1, 0), 0).astype(np.int64)
    total = int(n.sum())
    if total == 0:
        return out
    t = np.repeat(np.arange(len(n)), n)
    first = np.cumsum(n) - n
    row = r0[t].astype(np.int64) + (np.arange(total) - first[t])
    yc = row + 0.5

    # The span on that row: min and max of the edges' crossings (a vertex exactly on the line
    # counts for both of its edges; horizontal edges are left out, their neighbours bound them).
    lo = np.full(total, np.inf)
    hi = np.full(total, -np.inf)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ya, yb, xa, xb = y[t, a], y[t, b], x[t, a], x[t, b]
        dy = yb - ya
        cross = (np.minimum(ya, yb) <= yc) & (yc <= np.maximum(ya, yb)) & (dy != 0)
        s = np.divide(yc - ya, dy, out=np.zeros(total), where=cross)
        xs = xa + s * (xb - xa)
        lo = np.where(cross, np.minimum(lo, xs), lo)
        hi = np.where(cross, np.maximum(hi, xs), hi)
    # Covered centres j + 0.5 in [lo, hi].
    c0 = np.maximum(np.ceil(lo - 0.5), 0)
    c1 = np.minimum(np.floor(hi - 0.5), w - 1)
    keep = np.isfinite(lo) & (c0 <= c1)
    if not keep.any():
        return out
    row, c0, c1 = row[keep], c0[keep].astype(np.int64), c1[keep].astype(np.int64)
    stride = w + 1
    diff = np.bincount(row * stride + c0, minlength=h * stride)
    diff -= np.bincount(row * stride + c1 + 1, minlength=h * stride)
    return np.cumsum(diff.reshape(h, stride)[:, :w], axis=1) > 0


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: the mask's pixels within `width` 4-connected steps of its edge (a pixel
    outside the image counts as outside the mask, so a mask touching the border is closed there)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise DualPMError(f"outline: mask has shape {m.shape}, expected (H, W)")
    if width < 1:
        raise DualPMError(f"outline: width {width} must be at least 1")
    inner = m
    for _ in range(int(width)):
        p = np.pad(inner, 1, constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks (metrics.mask_iou: 1.0 when both are empty)."""
    from .metrics import mask_iou  # metrics imports this module for rig_iou

    return mask_iou(a, b)
