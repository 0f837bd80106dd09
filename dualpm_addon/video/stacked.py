"""Levenberg-Marquardt over several frames at once: the clip's shape solve (keyframes sharing the
shape parameters) and the windowed temporal solve (frames coupled by smoothness and contact).

The unknowns are one vector z. Each frame is a `Block`: its own parameter vector x (the chain
model's layout, fitting/chain.py) whose entries either come from z (`zidx[i]` >= 0: the z entry
that parameter i reads; frames of a shape solve read the shared entries from the same place) or
stay at the block's base value (-1). A block's terms are the single-frame terms of fitting/terms
(residuals and Jacobians in x); coupling terms (fitting/terms/smoothness.py, contact.py) see z
through the blocks and give sparse Jacobians in z. The normal equations are assembled block by
block (a frame's Jacobian never meets another frame's columns), so the cost of one iteration is
that of the frames' own terms plus one solve of size len(z), which is banded in a window and
solved as such (_System). Robust losses are handled as in fitting/solver.py (IRLS weights rho').
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


def block_system(block: Block, x: np.ndarray, rs: list) -> tuple[np.ndarray, np.ndarray]:
    """(J^T W J, J^T W r) of one block's terms at x over its columns block.cols: every term's rows
    scaled by the square roots of their IRLS weights into one matrix, so one symmetric product
    (BLAS syrk) forms the block's part of H."""
    cols = block.cols
    m = sum(len(r) for r in rs)
    j = np.empty((m, len(cols)))
    rw = np.empty(m)
    row = 0
    for t, r in zip(block.terms, rs):
        part = j[row:row + len(r)]
        np.take(t.jacobian(x), cols, axis=1, out=part, mode="clip")
        rw[row:row + len(r)] = r
        if t.loss is not None:
            sw = np.sqrt(_weights(t, r))
            part *= sw[:, None]
            rw[row:row + len(r)] *= sw
        row += len(r)
    return j.T @ j, j.T @ rw


class _System:
    """The normal equations of one stacked solve, assembled each iteration. Where every block's
    z entries are one contiguous run and the coupling reaches only a few frames (a window: the
    acceleration rows join frames two apart), H is held banded (LAPACK's upper band storage) and
    the damped systems are solved by a banded Cholesky, whose cost grows with the window's length
    instead of its cube; otherwise dense. The linear coupling terms' J^T J is formed once."""

    def __init__(self, blocks, coupling, z, banded: bool = True):
        n = len(z)
        self.n = n
        self.lin = [t for t in coupling if getattr(t, "linear", False) and t.loss is None]
        self.other = [t for t in coupling if t not in self.lin]
        runs, kd = [], 0
        for b in blocks:
            if not b.terms or not len(b.cols):
                runs.append(None)
                continue
            lo, hi = int(b.zi.min()), int(b.zi.max())
            contiguous = hi - lo + 1 == len(b.zi) and np.array_equal(np.sort(b.zi), np.arange(lo, hi + 1))
            order = None if np.all(np.diff(b.zi) > 0) else np.argsort(b.zi)
            runs.append((lo, order) if contiguous else False)
            kd = max(kd, hi - lo)
        jl = [t.jacobian(z) for t in self.lin]
        jo = [t.jacobian(z) for t in self.other]
        for j in jl + jo:  # the pattern of a coupling Jacobian does not change over a solve
            coo = j.tocoo()
            if coo.nnz:
                lo = np.full(j.shape[0], n)
                hi = np.full(j.shape[0], -1)
                np.minimum.at(lo, coo.row, coo.col)
                np.maximum.at(hi, coo.row, coo.col)
                kd = max(kd, int((hi - lo).max()))
        self.banded = banded and all(r is not False for r in runs) and 2 * (kd + 1) <= n
        self.kd, self.runs = kd, runs
        hl = None
        for j in jl:
            hl = j.T @ j if hl is None else hl + j.T @ j
        self.jl = jl
        if self.banded:
            self.h_lin = self._band(hl.tocoo()) if hl is not None else np.zeros((kd + 1, n))
            self._tri = {}
        else:
            self.h_lin = hl.toarray() if hl is not None else np.zeros((n, n))

    def _band(self, coo) -> np.ndarray:
        """The upper band of a symmetric sparse matrix: ab[kd + i - j, j] = a[i, j], i <= j."""
        ab = np.zeros((self.kd + 1, self.n))
        up = coo.row <= coo.col
        np.add.at(ab, (self.kd + coo.row[up] - coo.col[up], coo.col[up]), coo.data[up])
        return ab

    def _band_index(self, m: int):
        """(source in an m x m block, target in the band storage for a block at z offset 0)."""
        if m not in self._tri:
            i, j = np.triu_indices(m)
            self._tri[m] = (i * m + j, (self.kd + i - j) * self.n + j)
        return self._tri[m]

    def assemble(self, blocks, z, rs, cr):
        """(H, g): H dense (n, n) or banded (kd + 1, n)."""
        h = self.h_lin.copy()
        g = np.zeros(self.n)
        for b, brs, run in zip(blocks, rs, self.runs):
            if run is None:
                continue
            hb, gb = block_system(b, b.x(z), brs)
            g[b.zi] += gb
            if self.banded:
                lo, order = run
                if order is not None:
                    hb = hb[np.ix_(order, order)]
                src, dst = self._band_index(len(hb))
                h.ravel()[dst + lo] += hb.ravel()[src]
            else:
                h[np.ix_(b.zi, b.zi)] += hb
        for j, r in zip(self.jl, cr[:len(self.jl)]):
            g += j.T @ r
        for t, r in zip(self.other, cr[len(self.jl):]):
            j = t.jacobian(z)
            w = _weights(t, r)
            jw = j.multiply(w[:, None]).tocsr() if t.loss is not None else j
            part = (jw.T @ j).tocoo()
            if self.banded:
                h += self._band(part)
            else:
                h += part.toarray()
            g += jw.T @ r
        return h, g

    def damped(self, h, g):
        """solve_damped for solver.damped_step on a banded H; None for a dense one."""
        if not self.banded:
            return None
        from scipy.linalg import cho_solve_banded, cholesky_banded

        diag = np.maximum(h[self.kd], 1e-12)

        def solve(lam):
            a = h.copy()
            a[self.kd] += lam * diag
            c = cholesky_banded(a, overwrite_ab=True, lower=False, check_finite=False)
            return -cho_solve_banded((c, False), g, check_finite=False)

        return solve


def normal_equations(blocks, coupling, z, rs, cr):
    """(H, g): the IRLS Gauss-Newton system in z, dense."""
    system = _System(blocks, coupling, z, banded=False)
    return system.assemble(blocks, z, rs, _ordered(system, coupling, cr))


def _ordered(system, coupling, cr):
    """The coupling residuals in the system's order (linear terms first)."""
    by = {id(t): r for t, r in zip(coupling, cr)}
    return [by[id(t)] for t in system.lin + system.other]


def solve(blocks: list[Block], coupling: list, z0: np.ndarray, max_iter: int = 5, tol: float = 1e-3,
          lam0: float = 1e-3, tries: int = 6) -> StackSolution:
    """Levenberg-Marquardt in z from z0 (solver.damped_step's steps, up to `tries` dampings each),
    at most max_iter iterations, until the cost falls by less than tol relatively."""
    from ..fitting.solver import damped_step

    z = np.array(z0, dtype=np.float64)
    c, rs, cr = _cost(blocks, coupling, z)
    system = _System(blocks, coupling, z)
    nfev, lam, it = 1, lam0, 0
    for it in range(1, max_iter + 1):
        h, g = system.assemble(blocks, z, rs, _ordered(system, coupling, cr))

        def trial(step):
            nonlocal nfev
            c_new, rs_new, cr_new = _cost(blocks, coupling, z + step)
            nfev += 1
            return c_new, (z + step, rs_new, cr_new)

        solve_damped = system.damped(h, g)
        step, state, c_new, lam = damped_step(None if solve_damped else h, g, lam, trial, c, tries=tries,
                                              solve_damped=solve_damped)
        rel = (c - c_new) / max(c, 1e-300)
        if state is not None:
            (z, rs, cr), c = state, c_new
        if state is None or rel < tol or np.max(np.abs(step)) < 1e-8:
            break
    return StackSolution(z, float(c), nfev, it)
