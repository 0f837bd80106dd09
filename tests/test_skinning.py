import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.skinning import dense_weights, dominant_joints, linear_blend_skinning, top_k_weights


def test_rest_pose_reproduces_rest_mesh_exactly(horse):
    v = horse.pose_vertices(horse.skeleton.rest_pose())
    assert np.array_equal(v, horse.vertices) or np.max(np.abs(v - horse.vertices)) < 1e-12


def test_vectorised_over_frames_equals_loop(horse):
    clip = horse.clip("Gallop")
    all_frames = horse.pose_vertices(clip.rotations, clip.root_translation, clip.offsets)
    assert all_frames.shape == (clip.num_frames, len(horse.vertices), 3)
    sk = horse.skeleton
    for f in (0, 7):
        g = sk.forward_kinematics(clip.rotations[f], clip.root_translation[f], offsets=clip.offsets[f])
        s = sk.skinning_matrices(g)
        # Reference: transform each point by each of its bones, then blend.
        ref = np.zeros_like(horse.vertices)
        for k in range(horse.skin_joints.shape[1]):
            m = s[horse.skin_joints[:, k]]
            ref += horse.skin_weights[:, k:k + 1] * (np.einsum("vij,vj->vi", m[:, :3, :3], horse.vertices) + m[:, :3, 3])
        assert np.allclose(all_frames[f], ref, atol=1e-12)


def test_top_k_weights_normalise_and_keep_largest():
    w = np.array([[0.1, 0.5, 0.2, 0.15, 0.05], [0, 0, 0, 0, 0]])
    idx, wk = top_k_weights(w, 4)
    assert list(idx[0]) == [1, 2, 3, 0]
    assert np.isclose(wk[0].sum(), 1)
    assert idx[1, 0] == 0 and wk[1, 0] == 1
    assert np.allclose(dense_weights(idx, wk, 5)[0, [1, 2, 3, 0]], wk[0])


def test_shape_errors():
    with pytest.raises(DualPMError, match="points"):
        linear_blend_skinning(np.zeros((4, 2)), np.zeros((4, 1), int), np.ones((4, 1)), np.tile(np.eye(4), (1, 1, 1)))
    with pytest.raises(DualPMError, match="do not match"):
        linear_blend_skinning(np.zeros((4, 3)), np.zeros((3, 1), int), np.ones((3, 1)), np.tile(np.eye(4), (1, 1, 1)))


def test_dominant_joints_pick_the_largest_weight():
    joints = np.array([[3, 1, 0, 0], [2, 5, 7, 0]])
    weights = np.array([[0.2, 0.7, 0.1, 0.0], [0.25, 0.25, 0.5, 0.0]])
    assert dominant_joints(joints, weights).tolist() == [1, 7]
