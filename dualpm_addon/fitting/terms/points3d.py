"""The predictor's 3D points: each point's Q, posed, should sit at its observed P."""

from __future__ import annotations

import numpy as np

from ..chain import BoundPoints


class Points3D:
    """Rows (3 per point): (camera(Q_i) - P_i) * row_scale * sqrt(weight), in body lengths
    (row_scale = 1 / body length) so that f_scale is a fraction of the body."""

    def __init__(self, bound: BoundPoints, p: np.ndarray, row_scale: float, weight: float = 1.0,
                 loss: str = "soft_l1", f_scale: float = 0.01):
        self.bound, self.p = bound, np.asarray(p, dtype=np.float64)
        self.row_scale = float(row_scale)
        self.scale = float(row_scale) * np.sqrt(weight)
        self.loss, self.f_scale = loss, f_scale

    def residuals(self, x) -> np.ndarray:
        return ((self.bound.camera(x) - self.p) * self.scale).ravel()

    def jacobian(self, x) -> np.ndarray:
        j = self.bound.jacobian(x)
        return j.reshape(-1, j.shape[2]) * self.scale
