"""fitting/trust.py: the 3D term's weight from how well P agrees with a rig."""

import numpy as np
import pytest

from dualpm_addon.fitting import trust


def test_weight_is_the_default_for_a_weak_map_and_grows_as_p_agrees():
    base, ref, cap = 0.1, 0.05, 10.0
    assert trust.points3d_weight(0.08, base, ref, cap) == base  # the shipped predictor's spread
    assert trust.points3d_weight(0.05, base, ref, cap) == pytest.approx(base)
    assert trust.points3d_weight(0.025, base, ref, cap) == pytest.approx(4 * base)  # inverse variance
    assert trust.points3d_weight(0.001, base, ref, cap) == cap  # an exact map: capped
    assert trust.points3d_weight(0.01, base, 0.0, cap) == base  # reference 0: the fixed weight
    assert trust.points3d_weight(float("nan"), base, ref, cap) == base
    w = [trust.points3d_weight(s, base, ref, cap) for s in np.linspace(0.001, 0.2, 50)]
    assert all(a >= b for a, b in zip(w, w[1:]))


def test_spread_is_the_median_distance_in_body_lengths():
    class Bound:
        def camera(self, x):
            return np.zeros((5, 3))

    class Term:
        bound, row_scale = Bound(), 0.5  # body length 2 m
        p = np.array([[0, 0, 0.1], [0, 0.2, 0], [0.3, 0, 0], [0, 0, 0.4], [10.0, 0, 0]])

    assert trust.point_spread(Term(), None) == pytest.approx(0.3 * 0.5)  # the outlier does not count
