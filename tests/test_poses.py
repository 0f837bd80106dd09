"""Pose sampling for synthesis (training/poses.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_angle, quat_to_axis_angle
from training import poses


@pytest.fixture(scope="module")
def space(horse):
    return poses.pose_space(horse)


def test_limits_hold_every_clip_frame_and_leave_a_margin(horse, space):
    rv = quat_to_axis_angle(np.asarray(horse.clip_rotations, dtype=np.float64))
    assert np.all(rv >= space.low) and np.all(rv <= space.high)
    assert np.all(space.high - space.low >= 2 * poses.MARGIN_MIN - 1e-12)
    assert np.all(space.sigma >= poses.SIGMA_FLOOR)


def test_clip_pose_is_the_baked_frame(horse):
    p = poses.clip_pose(horse, "Walk", 7)
    c = horse.clip("Walk")
    np.testing.assert_array_equal(p.rotations, c.rotations[7])
    np.testing.assert_array_equal(p.root_translation, c.root_translation[7])
    with pytest.raises(DualPMError, match="frames"):
        poses.clip_pose(horse, "Walk", c.num_frames)


def test_blend_is_a_slerp_between_frames(horse):
    a, b = poses.clip_pose(horse, "Walk", 0), poses.clip_pose(horse, "Gallop", 10)
    np.testing.assert_allclose(quat_angle(poses.blend(a, b, 0.0).rotations, a.rotations), 0, atol=1e-6)
    np.testing.assert_allclose(quat_angle(poses.blend(a, b, 1.0).rotations, b.rotations), 0, atol=1e-6)
    half = poses.blend(a, b, 0.5)
    # Halfway: the same angle from both ends for every joint.
    np.testing.assert_allclose(quat_angle(half.rotations, a.rotations), quat_angle(half.rotations, b.rotations),
                               atol=1e-6)
    np.testing.assert_allclose(half.root_translation, 0.5 * (a.root_translation + b.root_translation))
    assert half.clip == "Walk" and half.clip_b == "Gallop" and half.blend == 0.5


def test_perturbation_stays_within_limits_and_scales(horse, space):
    base = poses.clip_pose(horse, "Idle", 0)
    rng = np.random.default_rng(0)
    zero = poses.perturb(base, space, rng, 0.0)
    np.testing.assert_allclose(quat_angle(zero.rotations, base.rotations), 0, atol=1e-6)
    moved = []
    for scale in (0.3, 1.0):
        p = poses.perturb(base, space, np.random.default_rng(1), scale)
        rv = quat_to_axis_angle(p.rotations)
        assert np.all(rv >= space.low - 1e-9) and np.all(rv <= space.high + 1e-9)
        moved.append(np.mean(quat_angle(p.rotations, base.rotations)))
    assert 0 < moved[0] < moved[1]


def test_sampling_is_deterministic_and_covers_clips_blends_and_headings(horse, space):
    a = poses.sample(horse, np.random.default_rng(5), space)
    b = poses.sample(horse, np.random.default_rng(5), space)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    assert a.description() == b.description()
    rng = np.random.default_rng(6)
    many = [poses.sample(horse, rng, space) for _ in range(300)]
    assert {p.clip for p in many} == set(horse.clip_names)
    assert 0.2 < np.mean([p.clip_b != "" for p in many]) < 0.4
    assert 0.7 < np.mean([p.perturbation > 0 for p in many]) < 0.9
    yaw = np.array([p.yaw for p in many])
    assert yaw.min() >= 0 and yaw.max() < 2 * np.pi
    assert np.histogram(yaw, bins=8, range=(0, 2 * np.pi))[0].min() > 15  # the full circle
    m = many[0].model_to_world()
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(m[2, :3], [0, 0, 1])  # a turn about the up axis only


def test_clip_exclusion(horse, space):
    rng = np.random.default_rng(7)
    held = ("Gallop", "horse:walk")
    names = poses.clip_names(horse, held)
    assert "Gallop" not in names and "Walk" not in names and "Idle" in names
    seen = {poses.sample(horse, rng, space, exclude=held).clip for _ in range(100)}
    assert not seen & {"Gallop", "Walk"}
    poses.check_exclusions([horse], held)
    with pytest.raises(DualPMError, match="unknown clip 'Galop'"):
        poses.check_exclusions([horse], ["Galop"])
    with pytest.raises(DualPMError, match="every clip is excluded"):
        poses.sample(horse, rng, space, exclude=horse.clip_names)
