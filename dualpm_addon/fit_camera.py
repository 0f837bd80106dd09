"""Place the point cloud so that it reprojects onto its pixels: the object's distance (a camera-
space translation) and, when it is unknown, the focal length.

A dual point map gives every point P a pixel u (the grid cell it came from), and the map's
intrinsics K say where P should project. A predicted P can be right in shape yet off in depth
(a monocular network's scale-distance ambiguity); the pixels are exact. Following the idea of
"To The Point" (Qu et al.: a camera from dense 2D-3D correspondences, solved by least squares on
the reprojection), we solve

    min over t (3,) [and f]   sum_i rho(| pi_f(P_i + t) - u_i |^2)

with pi_f the pinhole projection of K whose fx and fy are scaled together by f / fx (principal
point and aspect kept), rho a robust loss (soft L1, 1 px scale). The shape of the cloud is kept:
only a translation, so the skeleton fitted to P + t is the one fitted to P, moved.

Start: the problem is linear once multiplied through by the depth,
(u - cx) (Z + tz) = f (X + tx), so a linear least-squares solve in (tx, ty, tz) (or in f, f tx,
f ty, tz) gives the start, and scipy.optimize.least_squares refines the true reprojection error.
The focal length is only observable through perspective: when the cloud's depth spread is under
`MIN_DEPTH_SPREAD` of its distance the focal is left as given and `focal_observable` is False.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from .errors import DualPMError

MIN_DEPTH_SPREAD = 0.02  # std of depth / mean depth below which the focal length is not observable
MAX_POINTS = 3000


@dataclass
class CameraFit:
    """intrinsics (3, 3): K with the solved focal (the input K when not solved); focal_px: fx;
    translation (3,): camera-space move of the cloud (P' = P + translation); distance: the
    moved cloud's median depth (m); residual_px_rms / residual_px_median: reprojection error of
    P' in pixels; residual_px_before: median error of P before the move; inlier_fraction: points
    within 3 px; focal_solved, focal_observable; seconds."""

    intrinsics: np.ndarray
    focal_px: float
    translation: np.ndarray
    distance: float
    residual_px_rms: float
    residual_px_median: float
    residual_px_before: float
    inlier_fraction: float
    focal_solved: bool
    focal_observable: bool
    seconds: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Camera-space points moved by the solved translation."""
        return np.asarray(points, dtype=np.float64) + self.translation


def _project(p: np.ndarray, k: np.ndarray) -> np.ndarray:
    z = p[:, 2:3]
    uv = p[:, :2] / np.where(np.abs(z) > 1e-9, z, 1e-9)
    return np.stack([k[0, 0] * uv[:, 0] + k[0, 1] * uv[:, 1] + k[0, 2], k[1, 1] * uv[:, 1] + k[1, 2]], axis=1)


def _scaled(k: np.ndarray, s: float) -> np.ndarray:
    out = k.copy()
    out[0, 0] *= s
    out[0, 1] *= s
    out[1, 1] *= s
    return out


def _linear_start(p: np.ndarray, uv: np.ndarray, k: np.ndarray, solve_focal: bool):
    """(translation, focal scale) from the depth-multiplied linear system."""
    x, y, z = p.T
    # Normalised image coordinates relative to the principal point, with fx, fy factored out.
    b = (uv[:, 1] - k[1, 2]) / k[1, 1]
    a = (uv[:, 0] - k[0, 2] - k[0, 1] * b) / k[0, 0]
    n = len(p)
    if not solve_focal:
        # a (Z + tz) = X + tx  ->  -tx + a tz = X - a Z ; same with b, y.
        m = np.zeros((2 * n, 3))
        m[:n, 0], m[:n, 2] = -1, a
        m[n:, 1], m[n:, 2] = -1, b
        rhs = np.concatenate([x - a * z, y - b * z])
        t = np.linalg.lstsq(m, rhs, rcond=None)[0]
        return t, 1.0
    # a (Z + tz) = s (X + tx): unknowns s, s tx, s ty, tz.
    m = np.zeros((2 * n, 4))
    m[:n, 0], m[:n, 1], m[:n, 3] = x, 1, -a
    m[n:, 0], m[n:, 2], m[n:, 3] = y, 1, -b
    rhs = np.concatenate([a * z, b * z])
    s, stx, sty, tz = np.linalg.lstsq(m, rhs, rcond=None)[0]
    if not np.isfinite(s) or s <= 1e-6:
        return _linear_start(p, uv, k, False)[0], 1.0
    return np.array([stx / s, sty / s, tz]), float(s)


def _residuals(x, p, uv, k, solve_f: bool) -> np.ndarray:
    """Reprojection residuals (2N,) of the cloud moved by x[:3] (focal scale exp(x[3]))."""
    kk = _scaled(k, np.exp(x[3])) if solve_f else k
    q = p + x[:3]
    q[:, 2] = np.maximum(q[:, 2], 1e-6)
    return (_project(q, kk) - uv).ravel()


def _jacobian(x, p, uv, k, solve_f: bool) -> np.ndarray:
    """d _residuals / d x (2N, len(x)), analytic: finite differences cost least_squares one
    residual evaluation per unknown and iteration."""
    kk = _scaled(k, np.exp(x[3])) if solve_f else k
    q = p + x[:3]
    held = q[:, 2] < 1e-6  # clamped depth: the residual does not move with tz there
    z = np.maximum(q[:, 2], 1e-6)
    a, b = q[:, 0] / z, q[:, 1] / z
    j = np.zeros((len(q), 2, len(x)))
    j[:, 0, 0] = kk[0, 0] / z
    j[:, 0, 1] = kk[0, 1] / z
    j[:, 0, 2] = np.where(held, 0.0, -(kk[0, 0] * a + kk[0, 1] * b) / z)
    j[:, 1, 1] = kk[1, 1] / z
    j[:, 1, 2] = np.where(held, 0.0, -kk[1, 1] * b / z)
    if solve_f:  # d uv / d log s: the projection's offset from the principal point
        j[:, 0, 3] = kk[0, 0] * a + kk[0, 1] * b
        j[:, 1, 3] = kk[1, 1] * b
    return j.reshape(2 * len(q), len(x))


def fit_camera(points: np.ndarray, pixels: np.ndarray, intrinsics: np.ndarray, solve_focal: bool = False,
               loss: str = "soft_l1", f_scale_px: float = 1.0, seed: int = 0) -> CameraFit:
    """Solve the cloud's translation (and the focal length when `solve_focal`).

    points (N, 3) camera space (OpenCV, metres); pixels (N, 2) their pixel coordinates (u, v)
    in the frame of `intrinsics` (3, 3), pixel centres at integer + 0.5 (camera.py). At most
    MAX_POINTS random points are used. Bad input is a one-line DualPMError.
    """
    tic = time.perf_counter()
    p = np.asarray(points, dtype=np.float64)
    uv = np.asarray(pixels, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise DualPMError(f"camera fit: points have shape {p.shape}, expected (N, 3)")
    if uv.shape != (len(p), 2):
        raise DualPMError(f"camera fit: pixels have shape {uv.shape}, expected ({len(p)}, 2)")
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DualPMError("camera fit: intrinsics are not a valid 3x3 camera matrix")
    if len(p) < 3:
        raise DualPMError(f"camera fit: {len(p)} points; at least 3 are needed")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(uv))):
        raise DualPMError("camera fit: points or pixels hold NaN or infinite values")
    if np.any(p[:, 2] <= 0):
        raise DualPMError(f"camera fit: {int(np.sum(p[:, 2] <= 0))} points are not in front of the camera (z <= 0)")
    all_depth = p[:, 2].copy()
    if len(p) > MAX_POINTS:
        sel = np.random.default_rng(seed).choice(len(p), MAX_POINTS, replace=False)
        p, uv = p[sel], uv[sel]
    depth = p[:, 2]
    observable = float(np.std(depth) / np.mean(depth)) >= MIN_DEPTH_SPREAD
    solve_f = bool(solve_focal and observable)
    before = float(np.median(np.linalg.norm(_project(p, k) - uv, axis=1)))
    t0, s0 = _linear_start(p, uv, k, solve_f)
    # The linear start must keep every point in front of the camera; else start from zero.
    if np.min(depth + t0[2]) <= 1e-3 * np.mean(depth):
        t0, s0 = np.zeros(3), 1.0

    x0 = np.concatenate([t0, [np.log(s0)]]) if solve_f else t0
    sol = least_squares(_residuals, x0, jac=_jacobian, args=(p, uv, k, solve_f), method="trf", loss=loss,
                        f_scale=f_scale_px, x_scale="jac", max_nfev=50)
    x = sol.x
    t = x[:3]
    kk = _scaled(k, float(np.exp(x[3]))) if solve_f else k.copy()
    err = np.linalg.norm(_project(p + t, kk) - uv, axis=1)
    return CameraFit(intrinsics=kk, focal_px=float(kk[0, 0]), translation=t, distance=float(np.median(all_depth + t[2])),
                     residual_px_rms=float(np.sqrt(np.mean(err**2))), residual_px_median=float(np.median(err)),
                     residual_px_before=before, inlier_fraction=float(np.mean(err < 3.0)), focal_solved=solve_f,
                     focal_observable=observable, seconds=time.perf_counter() - tic)
