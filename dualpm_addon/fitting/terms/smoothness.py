"""Smoothness over time: finite differences of chosen parameters across consecutive frames of a
stacked solve (video/stacked.py), plain squares.

Order 1 (velocity): x_t - x_(t-1); order 2 (acceleration): x_(t-1) - 2 x_t + x_(t+1), for each
chosen parameter c, times col_scale[c] * sqrt(weight). On joint angles (axis-angle, radians)
and the root (rotation in radians, translation in body lengths via col_scale), order 2 lets a
motion go on at its pace and only resists jitter; order 1, weaker, holds still what the data
leaves free. Frames are the solve's blocks in time order; a frame whose parameters do not come
from z (a window's boundary) enters with its fixed values. The rows are linear in z, so the
Jacobian is one constant sparse matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

_STENCILS = {1: (-1.0, 1.0), 2: (1.0, -2.0, 1.0)}


class TemporalDifference:
    """Rows: for each run of len(stencil) consecutive blocks and each chosen parameter,
    sqrt(weight) * col_scale * sum_k stencil[k] x_(t+k)[c]. `gaps` (B,) float: frames elapsed
    from each block to the next (1 for consecutive frames); rows spanning more are scaled as
    differences per frame (velocity divided by the gap, acceleration by the mean gap squared)."""

    loss, f_scale = None, 1.0
    linear = True  # rows linear in z: a solver may form J^T J once

    def __init__(self, blocks, cols, order: int, weight: float, col_scale=None, gaps=None, nz: int | None = None):
        if order not in _STENCILS:
            raise ValueError(f"order must be 1 or 2, got {order}")
        stencil = np.array(_STENCILS[order])
        cols = np.asarray(cols)
        cs = np.ones(len(cols)) if col_scale is None else np.asarray(col_scale, dtype=np.float64)
        nb, m = len(blocks), len(stencil)
        gaps = np.ones(max(nb - 1, 0)) if gaps is None else np.asarray(gaps, dtype=np.float64)
        nz = int(nz if nz is not None else max((int(b.zidx.max()) for b in blocks), default=-1) + 1)
        rows, cidx, vals, consts = [], [], [], []
        sw = np.sqrt(weight)
        for t in range(nb - m + 1):
            span = gaps[t:t + m - 1]
            per = (1.0 / span[0]) if order == 1 else 1.0 / np.mean(span) ** 2
            zis = [blocks[t + k].zidx[cols] for k in range(m)]
            if all((zi < 0).all() for zi in zis):
                continue  # a run of fixed frames only: nothing to solve
            r = len(consts) * len(cols)
            const = np.zeros(len(cols))
            for k, zi in enumerate(zis):
                coef = stencil[k] * sw * per * cs
                free = zi >= 0
                rows.append(r + np.nonzero(free)[0])
                cidx.append(zi[free])
                vals.append(coef[free])
                const[~free] += coef[~free] * blocks[t + k].base[cols][~free]
            consts.append(const)
        r = len(consts) * len(cols)
        self.n_rows = r
        cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt))
        self.matrix = sparse.csr_matrix((cat(vals, np.float64), (cat(rows, np.int64), cat(cidx, np.int64))),
                                        shape=(r, nz))
        self.const = np.concatenate(consts) if consts else np.zeros(0)

    def residuals(self, z) -> np.ndarray:
        return self.matrix @ z + self.const

    def jacobian(self, z):
        return self.matrix
