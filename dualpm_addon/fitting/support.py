"""Which points a fit uses: checks on the input, Q matched to the template (correspondence.py),
support per bone, and the stratified subset the solver sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import correspondence as corr
from ..errors import DualPMError

ONE_BONE_FRACTION = 0.9  # a cloud with this share of its points on one bone cannot be fitted


def check_points(p, q, stage: str = "fit") -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    for name, a in (("P", p), ("Q", q)):
        if a.ndim != 2 or a.shape[1] != 3:
            raise DualPMError(f"{stage}: {name} has shape {a.shape}, expected (N, 3)")
    if len(p) != len(q):
        raise DualPMError(f"{stage}: P has {len(p)} points but Q has {len(q)}")
    if len(p) == 0:
        raise DualPMError(f"{stage}: the point cloud is empty (0 points)")
    bad = ~(np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(q), axis=1))
    if np.any(bad):
        raise DualPMError(f"{stage}: {int(bad.sum())} of {len(p)} points have NaN or infinite coordinates "
                          f"(pointmap.extract_points drops them)")
    return p, q


def stratified(dominant: np.ndarray, per_bone: int, total: int, rng) -> np.ndarray:
    """Indices: at most per_bone per dominant bone (random ones), then at most `total`, sorted."""
    order = rng.permutation(len(dominant))
    d = dominant[order]
    srt = np.argsort(d, kind="stable")
    ds = d[srt]
    rank = np.empty(len(d), dtype=np.int64)
    rank[srt] = np.arange(len(d)) - np.searchsorted(ds, ds, side="left")
    keep = order[rank < per_bone]
    if len(keep) > total:
        keep = rng.choice(keep, total, replace=False)
    return np.sort(keep)


@dataclass(frozen=True)
class Matched:
    sub: np.ndarray  # indices of the matched subset in the input
    m: corr.Correspondence
    valid: np.ndarray  # indices into sub of kept matches
    support: np.ndarray  # (J,) kept matches per dominant bone


def match_subset(p, q, index, max_matched: int, rng, min_support: int, names, stage: str) -> Matched:
    n = len(p)
    sub = np.arange(n) if n <= max_matched else np.sort(rng.choice(n, max_matched, replace=False))
    # The nearest grid sample's weights (k=1) suffice to count support and group points by
    # bone; the solver's subset gets the k-nearest blend afterwards.
    m = corr.match(index, q[sub], k=1, skin_far=False)
    valid = np.nonzero(m.valid)[0]
    if len(valid) < 10:
        raise DualPMError(f"{stage}: only {len(valid)} of {len(sub)} points have Q within "
                          f"{m.max_distance:.3f} m of the template; is Q in the canonical space?")
    support = np.bincount(m.dominant[valid], minlength=index.num_joints)
    held = np.nonzero(support >= min_support)[0]
    top = int(np.argmax(support))
    if support[top] >= ONE_BONE_FRACTION * len(valid):
        raise DualPMError(f"{stage}: all matched points lie on bone {names[top]!r} "
                          f"({support[top]} of {len(valid)}); a skeleton needs points on at least 3 bones")
    if len(held) < 3:
        bones = ", ".join(repr(names[j]) for j in held) or "none"
        raise DualPMError(f"{stage}: only {len(held)} bone(s) hold {min_support} or more matched points ({bones}); "
                          f"a skeleton needs points on at least 3 bones")
    return Matched(sub, m, valid, support)
