"""Foot contact over time: a foot on the ground stays put. For each (frame a, frame b, foot k)
where foot k is in contact in both (retarget.detect_contacts on the track), the rows are
(foot_k(x_b) - foot_k(x_a)) * row_scale * sqrt(weight), camera space (a camera that stands
still sees a planted foot still; row_scale 1 / body length). Feet are points bound to the chain
(their bone's head), so the Jacobian is the chain's (fitting/chain.py), placed in z at the two
frames' columns (video/stacked.py blocks; a window's fixed boundary frame adds none).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..chain import BoundPoints


class FootContact:
    loss, f_scale = None, 1.0

    def __init__(self, blocks, model, foot_joints, pairs, row_scale: float, weight: float, nz: int):
        """blocks: the stacked solve's (time order); foot_joints (K,) bone ids whose head is the
        foot; pairs: (a, b, k) block indices and foot index."""
        self.blocks = blocks
        self.pairs = [(int(a), int(b), int(k)) for a, b, k in pairs]
        self.scale = float(row_scale) * np.sqrt(weight)
        self.nz = int(nz)
        sk = model.ctx.skeleton
        feet = np.asarray(foot_joints)
        q = np.asarray(sk.rest_heads)[feet]
        kj = np.zeros((len(feet), 4), dtype=np.int64)
        kw = np.zeros((len(feet), 4))
        kj[:, 0], kw[:, 0] = feet, 1.0
        used = sorted({a for a, _, _ in self.pairs} | {b for _, b, _ in self.pairs})
        # one bound set per frame, so each keeps its own cache
        self.bound = {i: BoundPoints(model, q, kj, kw) for i in used}

    def _camera(self, z):
        return {i: bp.camera(self.blocks[i].x(z)) for i, bp in self.bound.items()}

    def residuals(self, z) -> np.ndarray:
        cam = self._camera(z)
        if not self.pairs:
            return np.zeros(0)
        return np.concatenate([(cam[b][k] - cam[a][k]) * self.scale for a, b, k in self.pairs])

    def jacobian(self, z):
        jac = {i: bp.jacobian(self.blocks[i].x(z)) for i, bp in self.bound.items()}
        rows, cols, vals = [], [], []
        for r, (a, b, k) in enumerate(self.pairs):
            for i, sign in ((b, 1.0), (a, -1.0)):
                blk = self.blocks[i]
                if not len(blk.cols):
                    continue
                j = jac[i][k][:, blk.cols] * (sign * self.scale)  # (3, free)
                rr, cc = np.meshgrid(3 * r + np.arange(3), blk.zi, indexing="ij")
                rows.append(rr.ravel())
                cols.append(cc.ravel())
                vals.append(j.ravel())
        cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt))
        return sparse.csr_matrix((cat(vals, np.float64), (cat(rows, np.int64), cat(cols, np.int64))),
                                 shape=(3 * len(self.pairs), self.nz))
