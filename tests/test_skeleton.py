import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_from_axis_angle
from dualpm_addon.skeleton import Skeleton, rigid_inverse


def test_rest_pose_gives_rest_frames(horse):
    sk = horse.skeleton
    g = sk.forward_kinematics(sk.rest_pose())
    assert np.allclose(g, sk.rest_matrices, atol=1e-12)
    assert np.allclose(sk.skinning_matrices(g), np.eye(4), atol=1e-12)


def test_rotating_a_bone_moves_only_its_descendants(horse):
    sk = horse.skeleton
    j = sk.index("FrontUpperLeg.L")
    q = sk.rest_pose()
    q[j] = quat_from_axis_angle(np.array([0.4, 0.0, 0.0]))
    g = sk.forward_kinematics(q)
    moved = np.linalg.norm(g[:, :3, 3] - sk.rest_heads, axis=1) > 1e-9
    assert set(np.nonzero(moved)[0]) == set(sk.descendants(j))
    # The bone's own head stays put and the distances inside the chain are preserved.
    assert np.allclose(g[j, :3, 3], sk.rest_heads[j])
    for c in sk.descendants(j):
        p = sk.parents[c]
        assert np.isclose(np.linalg.norm(g[c, :3, 3] - g[p, :3, 3]),
                          np.linalg.norm(sk.rest_heads[c] - sk.rest_heads[p]))


def test_batched_fk_equals_per_frame(horse):
    sk = horse.skeleton
    clip = horse.clip("Walk")
    batched = sk.forward_kinematics(clip.rotations, clip.root_translation, offsets=clip.offsets)
    for f in (0, clip.num_frames // 2, clip.num_frames - 1):
        single = sk.forward_kinematics(clip.rotations[f], clip.root_translation[f], offsets=clip.offsets[f])
        assert np.allclose(batched[f], single)


def test_rigid_inverse():
    q = quat_from_axis_angle(np.array([[0.1, 0.7, -0.3]]))
    from dualpm_addon.rotations import quat_to_matrix

    m = np.eye(4)
    m[:3, :3] = quat_to_matrix(q)[0]
    m[:3, 3] = [1, 2, 3]
    assert np.allclose(rigid_inverse(m) @ m, np.eye(4))


def test_bad_skeletons_are_refused():
    eye = np.tile(np.eye(3), (2, 1, 1))
    with pytest.raises(DualPMError, match="parent"):
        Skeleton(("a", "b"), np.array([-1, 1]), np.zeros((2, 3)), np.ones((2, 3)), eye)
    with pytest.raises(DualPMError, match="shape"):
        Skeleton(("a", "b"), np.array([-1, 0]), np.zeros((3, 3)), np.ones((2, 3)), eye)


def test_wrong_pose_shape_is_refused(horse):
    with pytest.raises(DualPMError, match="joints"):
        horse.skeleton.forward_kinematics(np.zeros((3, 4)))
