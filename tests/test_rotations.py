import numpy as np
import pytest

from dualpm_addon import rotations as r


def random_quats(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_matrix_roundtrip_covers_every_branch():
    q = random_quats(2000)
    # Include the 180-degree turns where the trace is -1 (the fragile case).
    q[:3] = [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    m = r.quat_to_matrix(q)
    assert np.allclose(m @ np.swapaxes(m, 1, 2), np.eye(3), atol=1e-12)
    back = r.matrix_to_quat(m)
    assert np.allclose(np.abs(np.sum(back * q, axis=1)), 1, atol=1e-9)


def test_mul_matches_matrix_product():
    a, b = random_quats(100, 1), random_quats(100, 2)
    assert np.allclose(r.quat_to_matrix(r.quat_mul(a, b)), r.quat_to_matrix(a) @ r.quat_to_matrix(b))


def test_axis_angle_roundtrip_and_small_angles():
    v = np.random.default_rng(3).normal(size=(500, 3))
    v *= (np.pi - 1e-3) / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.pi)  # one turn at most
    v[:5] *= 1e-10
    assert np.allclose(r.quat_to_axis_angle(r.quat_from_axis_angle(v)), v, atol=1e-9)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_roundtrip_every_order(order):
    rng = np.random.default_rng(4)
    angles = rng.uniform(-np.pi, np.pi, size=(300, 3))
    angles[:, 1] = rng.uniform(-1.5, 1.5, size=300)  # away from gimbal lock
    m = r.euler_to_matrix(angles, order)
    back = r.matrix_to_euler(m, order)
    assert np.allclose(r.euler_to_matrix(back, order), m, atol=1e-10)


def test_euler_is_intrinsic_in_written_order():
    a = np.array([0.3, -0.2, 0.5])
    expect = r.euler_to_matrix(a[:1], "Z") @ r.euler_to_matrix(a[1:2], "X") @ r.euler_to_matrix(a[2:], "Y")
    assert np.allclose(r.euler_to_matrix(a, "ZXY"), expect)


def test_slerp_endpoints_and_midpoint():
    a, b = random_quats(50, 5), random_quats(50, 6)
    assert np.allclose(np.abs(np.sum(r.quat_slerp(a, b, 0.0) * a, 1)), 1)
    assert np.allclose(np.abs(np.sum(r.quat_slerp(a, b, 1.0) * b, 1)), 1)
    mid = r.quat_slerp(a, b, 0.5)
    assert np.allclose(r.quat_angle(a, mid), r.quat_angle(mid, b), atol=1e-9)


def test_rotation_between_including_opposite():
    u = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    v = np.array([[0, 1.0, 0], [0, 0, -1], [0, 1, 0]])
    out = np.einsum("nij,nj->ni", r.quat_to_matrix(r.rotation_between(u, v)), u)
    assert np.allclose(out, v, atol=1e-12)
