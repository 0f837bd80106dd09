"""Reprojection of Q ("To The Point", Kokkinos et al. 2021): every kept visible pixel u says which
template point Q(u) is there; posed, skinned and projected through the solved camera, that point
should land on u. Pixels are exact and Q is the predictor's strongest output on real photos, so
this term, not P, places the rig on the photo."""

from __future__ import annotations

import numpy as np

from ..chain import BoundPoints
from .projection import chain_rule, project


class Reprojection:
    """Rows (2 per point): (project(camera(Q_i)) - u_i) / size * sqrt(weight * w_i).

    uv (N, 2) pixel positions (x, y) in the crop grid; k its intrinsics; size the grid's side in
    pixels (residuals are fractions of the crop, so f_scale 0.01 is 1.6 px at 160); point_weights
    (N,) the predictor's confidence, normalised to mean 1."""

    def __init__(self, bound: BoundPoints, uv: np.ndarray, k: np.ndarray, size: float,
                 point_weights: np.ndarray | None = None, weight: float = 1.0, loss: str = "soft_l1",
                 f_scale: float = 0.02):
        self.bound, self.uv, self.k = bound, np.asarray(uv, dtype=np.float64), np.asarray(k, dtype=np.float64)
        w = np.ones(len(uv)) if point_weights is None else np.asarray(point_weights, dtype=np.float64)
        self.row = (np.sqrt(weight * w) / float(size))[:, None]
        self.loss, self.f_scale = loss, f_scale

    def _project(self, x):
        m = self.bound.model
        return project(self.bound.camera(x), self.k, m.log_focal(x))

    def residuals(self, x) -> np.ndarray:
        return ((self._project(x)[0] - self.uv) * self.row).ravel()

    def jacobian(self, x) -> np.ndarray:
        _, d, dlf = self._project(x)
        j = chain_rule(d, dlf, self.bound.jacobian(x), self.bound.model) * self.row[:, :, None]
        return j.reshape(-1, j.shape[2])
