"""Robust non-linear least squares over a list of terms (terms/): Levenberg-Marquardt on the
normal equations with iteratively reweighted robust losses, or scipy's least_squares.

The objective is sum over terms of 0.5 f^2 rho((r / f)^2) for robust terms (scipy's losses,
f = the term's f_scale) plus 0.5 |r|^2 for plain ones. Weights rho' make each step a weighted
Gauss-Newton step (IRLS), so a fixed point has zero gradient of that objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DualPMError

LOSSES = ("soft_l1", "cauchy", "huber", "linear")


def rho(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust loss rho(z) of squared scaled residuals z, with rho' and rho'' (scipy's losses)."""
    if kind == "soft_l1":
        t = 1 + z
        return 2 * (np.sqrt(t) - 1), 1 / np.sqrt(t), -0.5 * t**-1.5
    if kind == "cauchy":
        t = 1 + z
        return np.log1p(z), 1 / t, -1 / t**2
    if kind == "huber":
        mask = z <= 1
        zs = np.maximum(z, 1e-12)
        return (np.where(mask, z, 2 * np.sqrt(zs) - 1), np.where(mask, 1.0, 1 / np.sqrt(zs)),
                np.where(mask, 0.0, -0.5 * zs**-1.5))
    if kind == "linear":
        return z, np.ones_like(z), np.zeros_like(z)
    raise DualPMError(f"fit: unknown loss {kind!r}; one of {', '.join(LOSSES)}")


@dataclass
class Solution:
    x: np.ndarray
    cost: float
    nfev: int
    converged: bool


def term_cost(term, r: np.ndarray) -> float:
    if term.loss is None:
        return 0.5 * float(r @ r)
    f = term.f_scale
    return 0.5 * f * f * float(rho((r / f) ** 2, term.loss)[0].sum())


def cost(terms, x) -> tuple[float, list]:
    rs = [t.residuals(x) for t in terms]
    return sum(term_cost(t, r) for t, r in zip(terms, rs)), rs


def breakdown(terms, x) -> dict:
    """Each term's share of the cost, by class name (terms of one class summed)."""
    out: dict = {}
    for t in terms:
        name = type(t).__name__
        out[name] = out.get(name, 0.0) + term_cost(t, t.residuals(x))
    return out


def damped_step(h: np.ndarray, g: np.ndarray, lam: float, trial, cost: float, tries: int = 8,
                solve_damped=None):
    """One Levenberg-Marquardt step on the normal equations h step = -g, damped by lam times h's
    diagonal: `trial(step)` gives (cost, state) of the moved parameters; lam grows eightfold until
    the cost falls (up to `tries` times) and shrinks fivefold after a success. solve_damped(lam),
    where given, solves the damped system for an h held in another form (h is then None; the
    clip fit's windows keep theirs banded) and raises LinAlgError where it is not positive definite.

    Returns (step, state or None when no try lowered the cost, the new cost, lam)."""
    from scipy.linalg import cho_factor, cho_solve

    idx = np.arange(len(g))
    diag = np.maximum(h[idx, idx], 1e-12) if solve_damped is None else None
    step = np.zeros(len(g))
    for _ in range(tries):
        try:
            if solve_damped is not None:
                step = solve_damped(lam)
            else:
                a = h.copy()
                a[idx, idx] += lam * diag
                step = -cho_solve(cho_factor(a, lower=False, overwrite_a=True, check_finite=False), g,
                                  check_finite=False)
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        c_new, state = trial(step)
        if c_new < cost:
            return step, state, c_new, max(lam / 5, 1e-9)
        lam *= 8
    return step, None, cost, lam


def levenberg_marquardt(terms, x0, max_iter: int = 10, tol: float = 5e-3, active=None) -> Solution:
    """Minimise over the parameters `active` (all when None); the others stay at x0."""
    x = np.array(x0, dtype=np.float64)
    act = np.arange(len(x)) if active is None else np.asarray(active)
    c, rs = cost(terms, x)
    nfev, lam, converged = 1, 1e-3, False
    for _ in range(max_iter):
        h = np.zeros((len(act), len(act)))
        g = np.zeros(len(act))
        for t, r in zip(terms, rs):
            j = t.jacobian(x)
            if j.shape[1] != len(act):  # terms of a root-only solve may give its columns alone
                j = j[:, act]
            w = np.ones(len(r)) if t.loss is None else rho((r / t.f_scale) ** 2, t.loss)[1]
            jw = j * w[:, None]
            h += jw.T @ j
            g += jw.T @ r

        def trial(step):
            nonlocal nfev
            x_new = x.copy()
            x_new[act] += step
            c_new, rs_new = cost(terms, x_new)
            nfev += 1
            return c_new, (x_new, rs_new)

        step, state, c_new, lam = damped_step(h, g, lam, trial, c)
        rel = (c - c_new) / max(c, 1e-300)
        if state is not None:
            (x, rs), c = state, c_new
        if state is None or rel < tol or np.max(np.abs(step)) < 1e-8:
            converged = True
            break
    return Solution(x, float(c), nfev, converged)


def solve_scipy(terms, x0, max_nfev: int = 300) -> Solution:
    """scipy.optimize.least_squares (trf, LSMR) on the same objective. Its one loss function
    takes one scale: every robust term must share one loss and f_scale (the 3D fit's do)."""
    from scipy import sparse
    from scipy.optimize import least_squares

    robust = [t for t in terms if t.loss is not None]
    plain = [t for t in terms if t.loss is None]
    if len({(t.loss, t.f_scale) for t in robust}) > 1:
        raise DualPMError("fit: the scipy solver needs one robust loss and scale for all data terms; use solver='lm'")
    kind, f_scale = (robust[0].loss, robust[0].f_scale) if robust else ("linear", 1.0)
    ordered = robust + plain
    n_robust = [0]

    def residuals(x):
        rs = [t.residuals(x) for t in ordered]
        n_robust[0] = sum(len(r) for r in rs[:len(robust)])
        return np.concatenate(rs)

    def jacobian(x):
        return sparse.csr_matrix(np.concatenate([t.jacobian(x) for t in ordered]))

    def loss(z):
        out = np.empty((3, len(z)))
        out[0], out[1], out[2] = z, 1.0, 0.0
        nd = n_robust[0]
        out[0, :nd], out[1, :nd], out[2, :nd] = rho(z[:nd], kind)
        return out

    residuals(np.asarray(x0, dtype=np.float64))
    sol = least_squares(residuals, x0, jac=jacobian, method="trf", tr_solver="lsmr", loss=loss, f_scale=f_scale,
                        x_scale="jac", max_nfev=max_nfev, ftol=1e-8, xtol=1e-8, gtol=1e-8)
    return Solution(sol.x, float(sol.cost), int(sol.nfev), bool(sol.status > 0))
