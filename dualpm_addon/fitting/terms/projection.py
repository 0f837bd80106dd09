"""Pinhole projection through the fitted camera and its derivatives, shared by the 2D terms.

The camera is the crop's intrinsics k with both focal lengths times exp(log_focal); pixel
centres at integer + 0.5, as everywhere (camera.py)."""

from __future__ import annotations

import numpy as np

MIN_DEPTH = 1e-3  # metres: a point behind or at the camera is held just in front of it


def focal_scaled(k: np.ndarray, log_focal: float) -> np.ndarray:
    """(3, 3) the camera k with both focal lengths times exp(log_focal): the solved camera."""
    out = np.array(k, dtype=np.float64)
    out[0, 0] *= np.exp(log_focal)
    out[1, 1] *= np.exp(log_focal)
    return out


def project(c: np.ndarray, k: np.ndarray, log_focal: float):
    """uv (N, 2) pixels, d uv / d c (N, 2, 3), d uv / d log_focal (N, 2)."""
    f = np.exp(log_focal)
    fx, fy, cx, cy = k[0, 0] * f, k[1, 1] * f, k[0, 2], k[1, 2]
    z = np.maximum(c[:, 2], MIN_DEPTH)
    a, b = c[:, 0] / z, c[:, 1] / z
    uv = np.stack([fx * a + cx, fy * b + cy], axis=1)
    d = np.zeros((len(c), 2, 3))
    d[:, 0, 0] = fx / z
    d[:, 0, 2] = -fx * a / z
    d[:, 1, 1] = fy / z
    d[:, 1, 2] = -fy * b / z
    d[c[:, 2] < MIN_DEPTH, :, 2] = 0.0
    return uv, d, np.stack([fx * a, fy * b], axis=1)


def chain_rule(d_uv_dc: np.ndarray, d_uv_dlf: np.ndarray, jc: np.ndarray, model) -> np.ndarray:
    """(N, 2, columns) d uv / d x from d c / d x (N, 3, columns); the columns are all parameters,
    or the root's alone (rotation, translation, scale, focal) while model.root_only is set."""
    j = np.matmul(d_uv_dc, jc)  # numpy's batched matmul: a third of einsum's time on these shapes
    col = (len(jc[0, 0]) - 1) if model.root_only else model.col_focal
    if model.photo:
        j[:, :, col] += d_uv_dlf
    return j
