"""Surface pull: move the posed mesh toward the observed points near it, folded into the rest
mesh so that skinning still reproduces it."""

from __future__ import annotations

import numpy as np


def pull_surface(template, rest_v, posed_v, smat, rm, q, residual, inlier, options):
    """Move each vertex by surface_pull times the mean residual of the inlier points whose Q lies
    within pull_radius body lengths of the vertex's canonical position; the same move goes into
    the rest mesh through the inverse of the vertex's blended skinning transform, so skinning
    the rest mesh still gives the posed one exactly."""
    from scipy.spatial import cKDTree

    if not np.any(inlier):
        return rest_v, posed_v
    qi, ri = q[inlier], residual[inlier]
    d, nb = cKDTree(qi).query(template.canonical_vertices, k=8,
                              distance_upper_bound=options.pull_radius * template.body_length)
    found = np.isfinite(d)
    nb = np.where(found, nb, 0)
    cnt = found.sum(axis=1)
    delta = np.einsum("vk,vkc->vc", found.astype(np.float64), ri[nb]) / np.maximum(cnt, 1)[:, None]
    delta *= options.surface_pull
    lin = np.einsum("vk,vkij->vij", template.skin_weights, smat[template.skin_joints, :3, :3])
    rest_delta = np.linalg.solve(lin, (delta @ rm)[..., None])[..., 0]
    return rest_v + rest_delta, posed_v + delta
