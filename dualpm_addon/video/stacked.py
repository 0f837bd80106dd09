"""Levenberg-Marquardt over several frames at once: the clip's shape solve (keyframes sharing the
shape parameters) and the windowed temporal solve (frames coupled by smoothness and contact).

The unknowns are one vector z. Each frame is a `Block`: its own parameter vector x (the chain
model's layout, fitting/chain.py) whose entries either come from z (`zidx[i]` >= 0: the z entry
that parameter i reads; frames of a shape solve read the shared entries from the same place) or
stay at the block's base value (-1). A block's terms are the single-frame terms of fitting/terms
(residuals and Jacobians in x); coupling terms (fitting/terms/smoothness.py, contact.py) see z
through the blocks and give sparse Jacobians in z. The normal equations are assembled block by
block (a frame's Jacobian never meets another frame's columns), so the cost of one iteration is
that of the frames' own terms plus one solve of size len(z), which is banded in a window.
Robust losses are handled as in fitting/solver.py (IRLS weights rho').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fitting.solver import cost as terms_cost
from ..fitting.solver import rho, term_cost


class Block:
    """One frame: base x (n_params,), zidx (n_params,) int (-1: held), terms."""

    def __init__(self, base: np.ndarray, zidx: np.ndarray, terms: list):
        self.base = np.array(base, dtype=np.float64)
        self.zidx = np.asarray(zidx, dtype=np.int64)
        self.cols = np.nonzero(self.zidx >= 0)[0]
        self.zi = self.zidx[self.cols]
        self.terms = terms

    def x(self, z: np.ndarray) -> np.ndarray:
        x = self.base.copy()
        x[self.cols] = z[self.zi]
        return x


@dataclass
class StackSolution:
    z: np.ndarray
    cost: float
    nfev: int
    iterations: int


def _cost(blocks, coupling, z):
    total, rs = 0.0, []
    for b in blocks:
        if b.terms:
            c, r = terms_cost(b.terms, b.x(z))
        else:
            c, r = 0.0, []
        total += c
        rs.append(r)
    cr = [t.residuals(z) for t in coupling]
    total += sum(term_cost(t, r) for t, r in zip(coupling, cr))
    return total, rs, cr


def _weights(term, r):
    return np.ones(len(r)) if term.loss is None else rho((r / term.f_scale) ** 2, term.loss)[1]


def normal_equations(blocks, coupling, z, rs, cr):
    """(H, g): the IRLS Gauss-Newton system in z."""
    n = len(z)
    h = np.zeros((n, n))
    g = np.zeros(n)
    for b, brs in zip(blocks, rs):
        if not b.terms or not len(b.cols):
            continue
        x = b.x(z)
        hb = np.zeros((len(b.cols), len(b.cols)))
        gb = np.zeros(len(b.cols))
        for t, r in zip(b.terms, brs):
            j = t.jacobian(x)[:, b.cols]
            jw = j * _weights(t, r)[:, None]
            hb += jw.T @ j
            gb += jw.T @ r
        h[np.ix_(b.zi, b.zi)] += hb
        g[b.zi] += gb
    sparse_h = None
    for t, r in zip(coupling, cr):
        j = t.jacobian(z)  # scipy.sparse (m, n)
        if getattr(t, "linear", False) and t.loss is None:
            # a linear term's J^T J never changes: formed once, kept on the term
            if getattr(t, "_jtj", None) is None:
                t._jtj = (j.T @ j).toarray()
            h += t._jtj
            g += j.T @ r
            continue
        w = _weights(t, r)
        jw = j.multiply(w[:, None]).tocsr() if t.loss is not None else j
        part = jw.T @ j
        sparse_h = part if sparse_h is None else sparse_h + part
        g += jw.T @ r
    if sparse_h is not None:
        h += sparse_h.toarray()
    return h, g


def solve(blocks: list[Block], coupling: list, z0: np.ndarray, max_iter: int = 5, tol: float = 1e-3,
          lam0: float = 1e-3) -> StackSolution:
    from ..fitting.solver import damped_step

    z = np.array(z0, dtype=np.float64)
    c, rs, cr = _cost(blocks, coupling, z)
    nfev, lam, it = 1, lam0, 0
    for it in range(1, max_iter + 1):
        h, g = normal_equations(blocks, coupling, z, rs, cr)

        def trial(step):
            nonlocal nfev
            c_new, rs_new, cr_new = _cost(blocks, coupling, z + step)
            nfev += 1
            return c_new, (z + step, rs_new, cr_new)

        step, state, c_new, lam = damped_step(h, g, lam, trial, c, tries=6)
        rel = (c - c_new) / max(c, 1e-300)
        if state is not None:
            (z, rs, cr), c = state, c_new
        if state is None or rel < tol or np.max(np.abs(step)) < 1e-8:
            break
    return StackSolution(z, float(c), nfev, it)
