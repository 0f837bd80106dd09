"""Priors: plain squares (a robust loss would let a bad pose escape its prior), linear in x.

PosePriorTerm  the learnt Gaussian on each free joint's axis-angle (prior.PosePrior), or the
               same Gaussian centred on an authored pose (a component of the mixture)
ScalePrior     bone-length log scales near 0 (template proportions)
FocalPrior     the focal length near the EXIF or default one
ThicknessPrior per-part thickness log scales near 0
"""

from __future__ import annotations

import numpy as np

from ..chain import ChainModel


class _Linear:
    loss, f_scale = None, 1.0

    def __init__(self, model: ChainModel, cols: np.ndarray, matrix: np.ndarray, mean: np.ndarray):
        """Rows matrix @ (x[cols] - mean)."""
        self.model, self.cols = model, np.asarray(cols)
        self.matrix, self.mean = np.asarray(matrix, dtype=np.float64), np.asarray(mean, dtype=np.float64)
        self._jac = np.zeros((len(self.matrix), model.n_params))
        self._jac[:, self.cols] = self.matrix

    def residuals(self, x) -> np.ndarray:
        return self.matrix @ (x[self.cols] - self.mean)

    def jacobian(self, x) -> np.ndarray:
        return self._jac


class PosePriorTerm(_Linear):
    """Rows (3 per free joint): weight * W_j (r_j - mean_j), |W_j v|^2 the Mahalanobis distance."""

    def __init__(self, model: ChainModel, weight: float):
        prior, free = model.ctx.prior, model.free
        nf = len(free)
        blocks = np.zeros((3 * nf, 3 * nf))
        for f, j in enumerate(free):
            blocks[3 * f:3 * f + 3, 3 * f:3 * f + 3] = weight * prior.whiten[j]
        super().__init__(model, np.arange(7, model.col_scale), blocks, prior.mean[free].ravel())

    def centred(self, mean: np.ndarray) -> "PosePriorTerm":
        """The same Gaussian moved to another mode: `mean` (J, 3) axis-angle per joint (the free
        joints' rows are used). The pose prior is a mixture, the clips' Gaussian and one
        component per authored pose (fitting/poses.py) with the same covariance; a fit started
        from an authored pose is held by that pose's component."""
        import copy

        out = copy.copy(self)
        out.mean = np.asarray(mean, dtype=np.float64)[self.model.free].ravel()
        return out


class ScalePrior(_Linear):
    def __init__(self, model: ChainModel, weight: float):
        n = model.n_groups
        super().__init__(model, model.col_scale + np.arange(n), weight * np.eye(n), np.zeros(n))


class FocalPrior(_Linear):
    """One row: (log focal factor - 0) / sigma; sigma small when the photo's EXIF gave it."""

    def __init__(self, model: ChainModel, sigma: float):
        super().__init__(model, np.array([model.col_focal]), np.array([[1.0 / sigma]]), np.zeros(1))


class ThicknessPrior(_Linear):
    def __init__(self, model: ChainModel, weight: float):
        n = model.n_parts
        super().__init__(model, model.col_thick + np.arange(n), weight * np.eye(n), np.zeros(n))
