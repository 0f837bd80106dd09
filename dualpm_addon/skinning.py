"""Linear blend skinning, vectorised over vertices and frames."""

from __future__ import annotations

import numpy as np

from .errors import DualPMError


def linear_blend_skinning(points: np.ndarray, skin_joints: np.ndarray, skin_weights: np.ndarray,
                          skinning_matrices: np.ndarray) -> np.ndarray:
    """Posed points (..., V, 3) from rest points (V, 3).

    skin_joints (V, K) int and skin_weights (V, K) (rows summing to 1) pick K bones per point;
    skinning_matrices (..., J, 4, 4) map rest to posed space (Skeleton.skinning_matrices).
    """
    points = np.asarray(points, dtype=np.float64)
    skin_joints = np.asarray(skin_joints)
    skin_weights = np.asarray(skin_weights, dtype=np.float64)
    s = np.asarray(skinning_matrices, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DualPMError(f"skinning: points have shape {points.shape}, expected (V, 3)")
    if skin_joints.shape != skin_weights.shape or skin_joints.shape[0] != points.shape[0]:
        raise DualPMError(f"skinning: joints {skin_joints.shape} and weights {skin_weights.shape} "
                          f"do not match {points.shape[0]} points")
    if s.shape[-2:] != (4, 4):
        raise DualPMError(f"skinning: matrices have shape {s.shape}, expected (..., J, 4, 4)")
    # Blend the 3x4 matrices first, then apply once: K matrix sums instead of K point transforms.
    blended = np.einsum("vk,...vkij->...vij", skin_weights, s[..., skin_joints, :3, :])
    return np.einsum("...vij,vj->...vi", blended[..., :3], points) + blended[..., 3]


def dominant_joints(skin_joints: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """(V,) the joint with the largest weight of each vertex."""
    return skin_joints[np.arange(len(skin_joints)), np.argmax(skin_weights, axis=1)]


def dense_weights(skin_joints: np.ndarray, skin_weights: np.ndarray, num_joints: int) -> np.ndarray:
    """(V, J) weight matrix from the sparse top-K form."""
    v = skin_joints.shape[0]
    w = np.zeros((v, num_joints))
    np.add.at(w, (np.repeat(np.arange(v), skin_joints.shape[1]), skin_joints.ravel()), skin_weights.ravel())
    return w


def top_k_weights(weights: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest weights per row and renormalise; rows with no weight go to joint 0."""
    weights = np.asarray(weights, dtype=np.float64)
    k = min(k, weights.shape[1])
    idx = np.argsort(-weights, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(weights, idx, axis=1)
    total = w.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    w = np.where(total > 0, w / np.where(total > 0, total, 1), 0)
    w[empty, 0] = 1
    idx[empty, 0] = 0
    return idx.astype(np.int32), w.astype(np.float32)
