import numpy as np
import pytest

from dualpm_addon import camera
from dualpm_addon.errors import DualPMError
from dualpm_addon.fit_camera import fit_camera
from tests import fit_fixtures as fx


@pytest.fixture(scope="module")
def scene(horse):
    return fx.sample_scene(horse, seed=1, n_points=4000)


def test_exact_points_need_no_move(scene):
    c = fit_camera(scene["P"], scene["pixel"], scene["intrinsics"])
    assert np.allclose(c.translation, 0, atol=1e-6)
    assert c.residual_px_median < 1e-4 and c.residual_px_before < 1e-4
    assert np.isclose(c.distance, np.median(scene["P"][:, 2]))


def test_distance_is_recovered_from_the_pixels(scene):
    move = np.array([0.12, -0.05, 0.9])  # a prediction 90 cm too far and a little off-centre
    c = fit_camera(scene["P"] + move, scene["pixel"], scene["intrinsics"])
    assert np.allclose(c.translation, -move, atol=1e-4)
    assert c.residual_px_before > 1.0 and c.residual_px_rms < 1e-3
    assert np.allclose(c.apply(scene["P"] + move), scene["P"], atol=1e-4)
    assert np.allclose(c.intrinsics, scene["intrinsics"])  # focal kept unless asked


def test_focal_and_distance_together(scene):
    k_wrong = scene["intrinsics"].copy()
    k_wrong[:2, :2] *= 1.3
    move = np.array([0.0, 0.0, 0.6])
    c = fit_camera(scene["P"] + move, scene["pixel"], k_wrong, solve_focal=True)
    assert c.focal_solved and c.focal_observable
    assert np.isclose(c.focal_px, scene["intrinsics"][0, 0], rtol=1e-3)
    assert np.allclose(c.translation, -move, atol=1e-3)
    assert c.residual_px_rms < 1e-2


def test_robust_to_wrong_pixels(scene):
    rng = np.random.default_rng(0)
    uv = scene["pixel"] + rng.normal(0, 0.3, scene["pixel"].shape)
    bad = rng.choice(len(uv), len(uv) // 5, replace=False)
    uv[bad] = rng.uniform(0, 160, (len(bad), 2))  # a fifth of the pixels anywhere in the image
    c = fit_camera(scene["P"] + np.array([0, 0, 0.5]), uv, scene["intrinsics"])
    assert np.allclose(c.translation, [0, 0, -0.5], atol=0.03)
    assert 0.75 < c.inlier_fraction < 0.85


def test_focal_of_a_flat_distant_cloud_is_not_observable():
    k = camera.intrinsics_from_focal_mm(50, 160, 160)
    rng = np.random.default_rng(1)
    p = np.column_stack([rng.uniform(-1, 1, (500, 2)), np.full(500, 100.0)])  # a wall 100 m away
    c = fit_camera(p, camera.project(p, k), k, solve_focal=True)
    assert not c.focal_observable and not c.focal_solved
    assert np.allclose(c.intrinsics, k)


@pytest.mark.parametrize("points, pixels, k, match", [
    (np.zeros((5, 2)), np.zeros((5, 2)), np.eye(3), r"points have shape \(5, 2\)"),
    (np.ones((5, 3)), np.zeros((4, 2)), np.eye(3), r"pixels have shape \(4, 2\)"),
    (np.ones((5, 3)), np.zeros((5, 2)), np.zeros((3, 3)), "intrinsics"),
    (np.ones((2, 3)), np.zeros((2, 2)), np.eye(3), "at least 3"),
    (np.full((5, 3), np.nan), np.zeros((5, 2)), np.eye(3), "NaN"),
    (-np.ones((5, 3)), np.zeros((5, 2)), np.eye(3), "in front of the camera"),
])
def test_bad_input_is_a_one_line_error(points, pixels, k, match):
    with pytest.raises(DualPMError, match=match):
        fit_camera(points, pixels, k)


@pytest.mark.parametrize("solve_f", [False, True])
def test_jacobian_matches_finite_differences(solve_f):
    from dualpm_addon.fit_camera import _jacobian, _residuals

    rng = np.random.default_rng(3)
    p = rng.normal(0, 0.3, (40, 3)) + [0, 0, 3.0]
    k = np.array([[300.0, 2.0, 80.0], [0, 310.0, 75.0], [0, 0, 1.0]])
    uv = rng.uniform(0, 160, (40, 2))
    x = np.array([0.1, -0.2, 0.4, 0.05]) if solve_f else np.array([0.1, -0.2, 0.4])
    num = np.empty((80, len(x)))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = 1e-6
        num[:, i] = (_residuals(x + e, p, uv, k, solve_f) - _residuals(x - e, p, uv, k, solve_f)) / 2e-6
    assert np.allclose(_jacobian(x, p, uv, k, solve_f), num, rtol=1e-5, atol=1e-4)
