"""Rotations as unit quaternions (w, x, y, z) and 3x3 matrices, vectorised over leading axes.

Every function takes arrays of shape (..., 4) or (..., 3, 3) and broadcasts; nothing here keeps
state. Euler angles appear only in BVH reading and writing (see `euler_to_matrix`).
"""

from __future__ import annotations

import numpy as np

IDENTITY_QUAT = np.array([1.0, 0.0, 0.0, 0.0])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    return q / np.where(n > 0, n, 1.0)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b (apply b first, then a)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    q = quat_normalize(q)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrix to quaternion with w >= 0 (Shepperd's method, stable for all angles)."""
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    t = np.trace(m, axis1=1, axis2=2)
    d = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    # Candidates from the largest of (trace, diag) keep the square root away from zero.
    choice = np.argmax(np.concatenate([t[:, None], d], axis=1), axis=1)
    q = np.empty((m.shape[0], 4))
    for c in range(4):
        sel = choice == c
        if not np.any(sel):
            continue
        r = m[sel]
        if c == 0:
            s = np.sqrt(1.0 + t[sel]) * 2
            q[sel] = np.stack([0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s,
                               (r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 1, 0] - r[:, 0, 1]) / s], 1)
        elif c == 1:
            s = np.sqrt(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]) * 2
            q[sel] = np.stack([(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s,
                               (r[:, 0, 1] + r[:, 1, 0]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s], 1)
        elif c == 2:
            s = np.sqrt(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]) * 2
            q[sel] = np.stack([(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s,
                               0.25 * s, (r[:, 1, 2] + r[:, 2, 1]) / s], 1)
        else:
            s = np.sqrt(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]) * 2
            q[sel] = np.stack([(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s,
                               (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s], 1)
    q = np.where(q[:, :1] < 0, -q, q)
    return quat_normalize(q).reshape(shape + (4,))


def quat_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians) to quaternion."""
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(x/2)/x -> 1/2 near zero; the series keeps small rotations exact.
    k = np.where(angle > 1e-8, np.sin(half) / np.where(angle > 1e-8, angle, 1.0), 0.5 - angle**2 / 48)
    return np.concatenate([np.cos(half), v * k], axis=-1)


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = quat_normalize(q)
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(s, q[..., :1])
    k = np.where(s > 1e-8, angle / np.where(s > 1e-8, s, 1.0), 2.0)
    return q[..., 1:] * k


def matrix_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    return quat_to_matrix(quat_from_axis_angle(axis_angle))


def quat_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in radians of the rotation taking a to b."""
    d = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    return 2 * np.arccos(np.clip(d, 0.0, 1.0))


def quat_slerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    a = quat_normalize(a)
    b = quat_normalize(b)
    t = np.asarray(t, dtype=np.float64)[..., None] if np.ndim(t) else float(t)
    d = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(d < 0, -b, b)
    d = np.abs(d)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    sin = np.sin(theta)
    small = sin < 1e-6
    wa = np.where(small, 1 - t, np.sin((1 - t) * theta) / np.where(small, 1.0, sin))
    wb = np.where(small, t, np.sin(t * theta) / np.where(small, 1.0, sin))
    return quat_normalize(wa * a + wb * b)


def rotation_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shortest-arc quaternion turning direction u onto direction v."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    d = np.sum(u * v, axis=-1, keepdims=True)
    c = np.cross(u, v)
    q = np.concatenate([1.0 + d, c], axis=-1)
    # Opposite vectors: any axis perpendicular to u works.
    opposite = (1.0 + d[..., 0]) < 1e-9
    if np.any(opposite):
        alt = np.cross(u, np.array([1.0, 0.0, 0.0]))
        alt2 = np.cross(u, np.array([0.0, 1.0, 0.0]))
        alt = np.where(np.linalg.norm(alt, axis=-1, keepdims=True) < 1e-6, alt2, alt)
        q = np.where(opposite[..., None], np.concatenate([np.zeros_like(d), alt], axis=-1), q)
    return quat_normalize(q)


_AXES = {"X": 0, "Y": 1, "Z": 2}


def euler_to_matrix(angles: np.ndarray, order: str) -> np.ndarray:
    """Intrinsic rotations in the written order, as BVH uses them: R = R_order[0] @ R_order[1] @ ...

    `angles` (..., 3) are radians in the same order as `order` (for example "ZXY").
    """
    angles = np.asarray(angles, dtype=np.float64)
    out = None
    for i, axis in enumerate(order.upper()):
        a = angles[..., i]
        c, s = np.cos(a), np.sin(a)
        m = np.zeros(a.shape + (3, 3))
        k = _AXES[axis]
        i1, i2 = (k + 1) % 3, (k + 2) % 3
        m[..., k, k] = 1
        m[..., i1, i1] = c
        m[..., i2, i2] = c
        m[..., i1, i2] = -s
        m[..., i2, i1] = s
        out = m if out is None else out @ m
    return out


def matrix_to_euler(m: np.ndarray, order: str) -> np.ndarray:
    """Inverse of `euler_to_matrix` for any of the six Tait-Bryan orders; radians, (..., 3)."""
    m = np.asarray(m, dtype=np.float64)
    order = order.upper()
    i, j, k = (_AXES[a] for a in order)
    # Parity of the axis permutation decides the signs of the off-diagonal terms.
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    # R = Ri(a) Rj(b) Rk(c): R[i,k] = sign*sin(b)
    sb = np.clip(sign * m[..., i, k], -1.0, 1.0)
    b = np.arcsin(sb)
    gimbal = np.abs(sb) > 1 - 1e-9
    a = np.arctan2(-sign * m[..., j, k], m[..., k, k])
    c = np.arctan2(-sign * m[..., i, j], m[..., i, i])
    # At gimbal lock put everything into the first angle.
    a_g = np.arctan2(sign * m[..., k, j], m[..., j, j])
    a = np.where(gimbal, a_g, a)
    c = np.where(gimbal, 0.0, c)
    return np.stack([a, b, c], axis=-1)
