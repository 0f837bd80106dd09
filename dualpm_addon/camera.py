"""Pinhole cameras in the OpenCV convention: x right, y down, z forward, metres.

Intrinsics K are 3x3 in pixels. Pixel (row i, column j) covers [j, j+1) x [i, i+1) and its centre
is (j + 0.5, i + 0.5), so a point projects to u = fx x/z + cx, v = fy y/z + cy in those units.
Blender's camera frame (looking down -Z, Y up) is converted in exactly one place, operators/.
"""

from __future__ import annotations

import numpy as np

from .errors import DualPMError

SENSOR_WIDTH_MM = 36.0  # 35 mm equivalent: the sensor width spans the longer image side


def intrinsics_from_focal_mm(focal_mm: float, width: int, height: int,
                             principal: tuple[float, float] | None = None) -> np.ndarray:
    """K for a 35 mm-equivalent focal length on a width x height image (square pixels)."""
    if focal_mm <= 0 or width <= 0 or height <= 0:
        raise DualPMError(f"camera: focal {focal_mm} mm on {width}x{height} is not a valid camera")
    f = focal_mm / SENSOR_WIDTH_MM * max(width, height)
    cx, cy = principal if principal is not None else (width / 2.0, height / 2.0)
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)


def focal_mm_from_intrinsics(k: np.ndarray, width: int, height: int) -> float:
    return float(k[0, 0]) * SENSOR_WIDTH_MM / max(width, height)


def project(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Camera-space points (..., 3) to pixel coordinates (..., 2)."""
    p = np.asarray(points, dtype=np.float64)
    z = p[..., 2:3]
    uv = p[..., :2] / np.where(np.abs(z) > 1e-12, z, 1e-12)
    return uv * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]]) + uv[..., ::-1] * np.array([k[0, 1], 0.0])


def pixel_centers(height: int, width: int) -> np.ndarray:
    """(H, W, 2) pixel-centre coordinates (u, v)."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([u, v], axis=-1)


def pixel_rays(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) ray directions through pixel centres with z = 1."""
    uv = pixel_centers(height, width)
    y = (uv[..., 1] - k[1, 2]) / k[1, 1]
    x = (uv[..., 0] - k[0, 2] - k[0, 1] * y) / k[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def crop_intrinsics(k: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of the crop `box` (x0, y0, x1, y1 in photo pixels) resampled to size (H, W)."""
    x0, y0, x1, y1 = box
    h, w = size
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    out = np.asarray(k, dtype=np.float64).copy()
    out[0, :] *= sx
    out[1, :] *= sy
    out[0, 2] -= x0 * sx
    out[1, 2] -= y0 * sy
    return out


def uncrop_intrinsics(k_crop: np.ndarray, box: tuple[float, float, float, float],
                      size: tuple[int, int]) -> np.ndarray:
    """The photo's intrinsics from those of its crop `box` resampled to size (H, W): the inverse
    of `crop_intrinsics`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = size
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    out = np.asarray(k_crop, dtype=np.float64).copy()
    out[0, 2] += x0 * sx
    out[1, 2] += y0 * sy
    out[0, :] /= sx
    out[1, :] /= sy
    return out


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV axes) for a camera at `eye` looking at `target`, z-up world."""
    eye = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r = np.stack([right, down, fwd])  # rows: camera axes in world
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ eye
    return m
