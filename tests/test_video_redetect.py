"""Re-detection (dualpm_addon.video.redetect): turning a frame's rig about the camera's vertical
axis, when a frame needs it, and a track stuck facing the wrong way caught again on a real
synthetic frame with exact maps, while a right one is left alone."""

import numpy as np
import pytest

from dualpm_addon.pipeline import fit_context
from dualpm_addon.video import ClipOptions, params, redetect, shape
from dualpm_addon.video.fit import _photo_options
from dualpm_addon.video.frame import SharedSamples, frame_terms, observe
from dualpm_addon.video.track import frame_cost, solve_pose
from training import clips

OPTIONS = ClipOptions(fps=24.0)


@pytest.fixture(scope="module")
def frame(templates_dir, horse):
    """(model, the frame's terms, its photo fit's x) of one exact-map frame of the horse's Walk."""
    f = clips.render_clip(templates_dir, "horse", "Walk", seed=3, count=1, backgrounds_dir=None)[0]
    pm = clips.exact_frame(f)
    ctx = fit_context(horse)
    model = params.clip_model(ctx)
    po = _photo_options(OPTIONS, pm)
    fr = observe(pm, 0, ctx, po, OPTIONS.place_camera, OPTIONS.seed, OPTIONS.budget)
    _, _, fit = shape.keyframe_fit(ctx, fr, 0, OPTIONS)
    x = params.x_from_fit(model, fit, float(fit.intrinsics[0, 0] / fr.k_crop[0, 0]))
    ts = frame_terms(model, fr, SharedSamples(model, horse, OPTIONS.budget.vertices), po, po.points3d_weight,
                     po.fit.pose_weight)
    return model, ts, x


def _heading(x):
    from dualpm_addon.rotations import matrix_from_axis_angle

    d = matrix_from_axis_angle(x[0:3]) @ np.array([0.0, -1.0, 0.0])  # the body's forward axis
    return np.degrees(np.arctan2(d[2], d[0]))


def test_a_turn_keeps_the_pose_and_the_body_and_changes_the_facing(frame):
    model, _, x = frame
    j = params.joints_camera(model, x)
    for deg in (90, 180, 270):
        y = redetect.turned(model, x, deg)
        jy = params.joints_camera(model, y)
        np.testing.assert_allclose(jy.mean(axis=0), j.mean(axis=0), atol=1e-9)
        # the same pose: the joints' distances to one another are kept
        np.testing.assert_allclose(np.linalg.norm(jy[:, None] - jy[None], axis=-1),
                                   np.linalg.norm(j[:, None] - j[None], axis=-1), atol=1e-9)
        np.testing.assert_array_equal(y[6:], x[6:])
        turn = (_heading(x) - _heading(y)) % 360
        assert abs(turn - deg) < 1e-6 or abs(turn - deg) > 360 - 1e-6, (deg, turn)
    np.testing.assert_allclose(params.joints_camera(model, redetect.turned(model, x, 360)), j, atol=1e-9)


def test_needed_only_well_above_the_keyframes():
    assert redetect.needed(2.1, 1.0, 2.0) and not redetect.needed(1.9, 1.0, 2.0)
    assert not redetect.needed(10.0, 1.0, 0.0)  # switched off
    assert not redetect.needed(10.0, float("nan"), 2.0) and not redetect.needed(10.0, 0.0, 2.0)


def test_a_track_facing_the_wrong_way_is_turned_back_and_a_right_one_kept(frame):
    model, ts, x = frame
    cols = params.pose_columns(model)
    right = solve_pose(model, ts, x, cols, OPTIONS.track_iterations, OPTIONS.photo.tol)
    # A track that lost the facing: the rig turned half round, solved as the tracker would.
    wrong = solve_pose(model, ts, redetect.turned(model, x, 180), cols, OPTIONS.track_iterations, OPTIONS.photo.tol)
    assert wrong[1] > 2 * right[1]
    xr, cr, deg = redetect.redetect(model, ts, wrong[0], wrong[1], cols, OPTIONS)
    assert deg != 0 and cr <= OPTIONS.redetect_gain * wrong[1]
    assert abs((_heading(xr) - _heading(x) + 180) % 360 - 180) < 20
    np.testing.assert_allclose(cr, frame_cost(ts, xr), rtol=1e-9)
    # The right facing: no turn halves its cost, so the tracked solution comes back as it was.
    xk, ck, dk = redetect.redetect(model, ts, right[0], right[1], cols, OPTIONS)
    assert dk == 0 and ck == right[1] and np.array_equal(xk, right[0])
