"""The temporal terms of the clip fit (fitting/terms/smoothness.py, contact.py) over a stacked
solve's blocks (video/stacked.py): analytic Jacobians against central finite differences, a
fixed boundary frame entering as a constant, and rows that vanish where they should."""

import numpy as np
import pytest

from dualpm_addon import fitting
from dualpm_addon.fitting.terms.contact import FootContact
from dualpm_addon.fitting.terms.smoothness import TemporalDifference
from dualpm_addon.video import params, stacked, window


@pytest.fixture(scope="module")
def model(horse):
    return params.clip_model(fitting.prepare(horse))


def blocks_for(model, xs, fixed: int = 1):
    """Blocks over frames xs (T, n_params): the first `fixed` held, the others' pose from z."""
    pose = params.pose_columns(model)
    out, z = [], []
    for t, x in enumerate(xs):
        zidx = np.full(model.n_params, -1)
        if t >= fixed:
            zidx[pose] = (t - fixed) * len(pose) + np.arange(len(pose))
            z.append(x[pose])
        out.append(stacked.Block(x, zidx, []))
    return out, np.concatenate(z)


def frames(model, n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros(model.n_params)
    x[0:3] = [0.3, 2.9, 0.2]  # near half a turn: where axis-angle would wrap
    x[3:6] = [0.1, 0.2, 6.0]
    xs = np.tile(x, (n, 1))
    xs[:, params.pose_columns(model)] += rng.normal(0, 0.05, (n, len(params.pose_columns(model))))
    return xs


def numeric(term, z, step=1e-6):
    out = np.zeros((len(term.residuals(z)), len(z)))
    for i in range(len(z)):
        d = np.zeros_like(z)
        d[i] = step
        out[:, i] = (term.residuals(z + d) - term.residuals(z - d)) / (2 * step)
    return out


@pytest.mark.parametrize("order", [1, 2])
def test_temporal_difference_jacobian_and_boundary(model, order):
    xs = frames(model)
    blocks, z = blocks_for(model, xs, fixed=2)
    cols = params.rotation_columns(model)
    term = TemporalDifference(blocks, cols, order, 2.0, nz=len(z))
    jac = term.jacobian(z).toarray()
    assert np.allclose(jac, numeric(term, z), atol=1e-6)
    # The residual is the stencil on the frames' values, the held frames' included.
    stencil = {1: [-1, 1], 2: [1, -2, 1]}[order]
    m = len(stencil)
    want = np.concatenate([np.sqrt(2.0) * sum(c * xs[t + k][cols] for k, c in enumerate(stencil))
                           for t in range(len(xs) - m + 1) if t + m - 1 >= 2])
    assert np.allclose(term.residuals(z), want)


def test_temporal_difference_zero_on_steady_motion(model):
    xs = frames(model)
    ramp = np.linspace(0, 1, len(xs))[:, None]
    xs = xs[0] + ramp * 0.1  # every parameter moving at one pace: no acceleration
    blocks, z = blocks_for(model, xs, fixed=1)
    acc = TemporalDifference(blocks, np.arange(3, 6), 2, 1.0, nz=len(z))
    vel = TemporalDifference(blocks, np.arange(3, 6), 1, 1.0, nz=len(z))
    assert np.abs(acc.residuals(z)).max() < 1e-12
    assert np.abs(vel.residuals(z)).max() > 0.01


def test_foot_contact_jacobian(model):
    xs = frames(model, n=4, seed=3)
    blocks, z = blocks_for(model, xs, fixed=1)
    feet = window.foot_joints(model.ctx.skeleton)
    pairs = [(0, 1, 0), (1, 2, 0), (2, 3, 3), (1, 2, 2)]
    term = FootContact(blocks, model, feet, pairs, 1 / 2.4, 30.0, len(z))
    r = term.residuals(z)
    assert r.shape == (3 * len(pairs),) and np.abs(r).max() > 0
    jac = term.jacobian(z).toarray()
    num = numeric(term, z)
    assert np.allclose(jac, num, atol=1e-5 * max(1.0, np.abs(num).max()))
    # the held frame 0 contributes no columns: the first pair moves only frame 1's
    assert np.abs(jac[0:3, len(params.pose_columns(model)):]).max() == 0


def test_foot_contact_still_feet(model):
    xs = np.tile(frames(model, n=1)[0], (3, 1))  # the same pose three times: feet stay put
    blocks, z = blocks_for(model, xs, fixed=1)
    term = FootContact(blocks, model, window.foot_joints(model.ctx.skeleton), [(0, 1, 1), (1, 2, 1)], 1.0, 1.0,
                       len(z))
    assert np.abs(term.residuals(z)).max() < 1e-12
