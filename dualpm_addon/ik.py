"""Analytic two-bone inverse kinematics, vectorised over frames.

A chain hip A -> knee B -> ankle C is bent in its current plane so that C reaches a target T:
the law of cosines gives the hip angle, the knee stays on the side it was on (no flips between
frames), and the two bones keep their lengths. Out-of-reach targets are approached as far as the
straightened chain allows (a hair short of straight, so the knee direction stays defined).
"""

from __future__ import annotations

import numpy as np

from .rotations import quat_to_matrix, rotation_between


def _unit(v: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, eps), n[..., 0]


def two_bone_ik(a: np.ndarray, b: np.ndarray, c: np.ndarray, target: np.ndarray,
                straight_margin: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World rotations that carry the chain onto the target.

    a, b, c, target: (..., 3) hip, knee, ankle and the ankle's goal. Returns (rot_a, rot_b, c_new):
    rot_a (..., 3, 3) turns the upper bone (apply it to everything below A), rot_b (..., 3, 3)
    then turns the lower bone about the new knee, and c_new is where the ankle lands.
    """
    a, b, c, target = (np.asarray(x, dtype=np.float64) for x in (a, b, c, target))
    l1 = np.linalg.norm(b - a, axis=-1)
    l2 = np.linalg.norm(c - b, axis=-1)
    u, d = _unit(target - a)
    reach_max = (l1 + l2) * (1 - straight_margin)
    reach_min = np.abs(l1 - l2) * (1 + straight_margin) + 1e-12
    d = np.clip(d, reach_min, np.maximum(reach_max, reach_min))
    # The knee keeps its side of the hip-target line; a straight leg falls back on the old bend plane.
    ab = b - a
    perp = ab - np.sum(ab * u, axis=-1, keepdims=True) * u
    w, wn = _unit(perp)
    normal, nn = _unit(np.cross(ab, c - a))
    alt, _ = _unit(np.cross(u, normal))
    fallback = (wn < 1e-6 * np.maximum(l1, 1e-12))[..., None]
    w = np.where(fallback & (nn[..., None] > 1e-12), alt, w)
    cos_a = np.clip((l1**2 + d**2 - l2**2) / np.maximum(2 * l1 * d, 1e-12), -1.0, 1.0)
    sin_a = np.sqrt(1 - cos_a**2)
    b_new = a + l1[..., None] * (cos_a[..., None] * u + sin_a[..., None] * w)
    c_new = a + d[..., None] * u
    rot_a = quat_to_matrix(rotation_between(_safe(b - a), _safe(b_new - a)))
    c_moved = b_new + np.einsum("...ij,...j->...i", rot_a, c - b)
    rot_b = quat_to_matrix(rotation_between(_safe(c_moved - b_new), _safe(c_new - b_new)))
    return rot_a, rot_b, c_new


def _safe(v: np.ndarray) -> np.ndarray:
    """Zero vectors become +Y so that rotation_between stays defined (and returns identity pairs)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 1e-12, v, np.array([0.0, 1.0, 0.0]))
