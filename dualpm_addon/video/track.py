"""Tracking: frame after frame, the rig started from the previous frame's pose, its root moving on
at the previous velocity, and a few LM iterations on the frame's own terms (pose and root only:
the shape is the clip's). Where a frame holds several animals, the one whose evidence costs
least at the predicted pose is followed: its Q lands on the pixels where the rig's surface
predicts them and its mask where the rig's outline is (tracking through Q and the mask). A
frame whose fitted rig covers its mask less than `min_rig_iou` is lost: the rig left the
animal (occlusion, a cut, another animal); the next seen frame starts again from the last good
one. Keyframes (shape.py) are their own starts too: the lower cost is kept, so a track that
drifted is caught again.

`bridge` fills the lost frames: interpolated between the seen frames around them (spherical for
rotations), held before the first and after the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..fitting import solver
from ..rotations import quat_from_axis_angle, quat_slerp, quat_to_axis_angle
from . import params
from .frame import Frame, frame_terms


@dataclass
class Track:
    frames: list  # (T,) the followed animal's Frame, or None
    x: np.ndarray  # (T, n_params)
    tracked: np.ndarray  # (T,) bool
    cost: np.ndarray  # (T,) the frame's data cost at its solution (NaN: lost)
    terms: list  # (T,) the frame's terms on the clip's model, or None


def frame_cost(terms_, x) -> float:
    return float(solver.cost(terms_, x)[0])


def grid_iou(model, samples, frame: Frame, x, template) -> float:
    """The rig's outline through the frame's crop camera against its grid mask."""
    from ..skinning import linear_blend_skinning

    if frame.mask is None:
        return float("nan")
    rm, gr, gt, sg, s, th = model.bones(x)
    rest, verts = _rest(model, x, template)
    g = rest.forward_kinematics(params.local_quaternions(model, x))
    v = linear_blend_skinning(verts, template.skin_joints, template.skin_weights, rest.skinning_matrices(g))
    k = frame.k_crop.copy()
    f = np.exp(model.log_focal(x))
    k[0, 0] *= f
    k[1, 1] *= f
    return metrics.rig_iou(v @ rm.T + x[3:6], template.faces, k, frame.mask)


_REST: dict = {}


def _rest(model, x, template):
    """The instance's rest skeleton and mesh for x's shape (cached: the clip has one shape)."""
    from ..fitting.rig import instance_rest_points, scaled_rest_skeleton

    key = (id(model), x[6:7].tobytes(), model.scale_block(x).tobytes(), model.thickness_block(x).tobytes())
    if _REST.get("key") != key:
        _, _, _, sg, s, th = model.bones(x)
        sk = model.ctx.skeleton
        rest = scaled_rest_skeleton(sk, sg, s)
        verts = instance_rest_points(sk, template.vertices, template.skin_joints, template.skin_weights, sg, s,
                                     instance=rest, thickness=th)
        _REST.clear()
        _REST.update(key=key, value=(rest, verts))
    return _REST["value"]


def track(model, samples, obs, keyx: dict, options, report, cancelled) -> Track:
    from .fit import _check, _photo_options

    template = model.ctx.template
    n = len(obs)
    first = min(keyx)
    cols = params.pose_columns(model)
    x = np.tile(keyx[first], (n, 1))
    tracked = np.zeros(n, dtype=bool)
    cost = np.full(n, np.nan)
    frames, all_terms = [None] * n, [None] * n
    prev = prev2 = None
    for t in range(first, n):
        _check(cancelled)
        report("track", (t + 1) / n)
        if not obs[t]:
            continue
        if prev is None:
            x_pred = keyx[first].copy()
        else:
            x_pred = x[prev].copy()
            if prev2 is not None:  # the root moves on at its last velocity, per frame elapsed
                x_pred[3:6] += (x[prev, 3:6] - x[prev2, 3:6]) * (t - prev) / (prev - prev2)
        built = []
        for fr in obs[t][: 1 if prev is None else None]:
            po = _photo_options(options, fr.pm)
            ts = frame_terms(model, fr, samples, po, po.points3d_weight, po.fit.pose_weight)
            built.append((frame_cost(ts, x_pred), fr, ts))
        c0, fr, ts = min(built, key=lambda b: b[0])
        starts = [x_pred]
        if t in keyx and t != first:
            starts.append(params.unwrap(model, np.stack([x_pred, keyx[t]]))[1])
        best = None
        for x0 in starts:
            sol = solver.levenberg_marquardt(ts, x0, options.track_iterations, options.photo.tol, cols)
            if best is None or sol.cost < best.cost:
                best = sol
        iou = grid_iou(model, samples, fr, best.x, template)
        if np.isfinite(iou) and iou < options.min_rig_iou:
            continue
        x[t], tracked[t], cost[t] = best.x, True, best.cost
        frames[t], all_terms[t] = fr, ts
        prev2, prev = prev, t
    return Track(frames, x, tracked, cost, all_terms)


def bridge(model, x: np.ndarray, tracked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x with lost frames filled, bridged flags): interpolation between the seen frames around a
    gap, the nearest seen frame's pose held at the clip's ends."""
    x = x.copy()
    seen = np.nonzero(tracked)[0]
    bridged = ~np.asarray(tracked, dtype=bool)
    if not len(seen):
        return x, bridged
    x[: seen[0]] = x[seen[0]]
    x[seen[-1] + 1:] = x[seen[-1]]
    for a, b in zip(seen[:-1], seen[1:]):
        for t in range(a + 1, b):
            x[t] = interpolate(model, x[a], x[b], (t - a) / (b - a))
    return x, bridged


def interpolate(model, xa: np.ndarray, xb: np.ndarray, s: float) -> np.ndarray:
    """Between two parameter vectors of the clip's model: each rotation triple (the root's and
    every free joint's) by slerp, the rest linearly."""
    out = (1 - s) * xa + s * xb
    for start in params.rotation_starts(model):
        qa = quat_from_axis_angle(xa[start:start + 3])
        qb = quat_from_axis_angle(xb[start:start + 3])
        r = quat_to_axis_angle(quat_slerp(qa, qb, s))
        out[start:start + 3] = params.nearest_equivalent(r, xa[start:start + 3])
    return out
