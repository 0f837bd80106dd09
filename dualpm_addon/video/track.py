"""Tracking: frame after frame, the rig started from the previous frame's pose, its root moving on
at the previous velocity, and a few LM iterations on the frame's own terms (pose and root only:
the shape is the clip's). Where a frame holds several animals, the one whose evidence costs
least at the predicted pose is followed: its Q lands on the pixels where the rig's surface
predicts them and its mask where the rig's outline is (tracking through Q and the mask). A
frame whose fitted rig covers its mask less than `min_rig_iou` is lost: the rig left the
animal (occlusion, a cut, another animal); the next seen frame starts again from the last good
one. Keyframes (shape.py) are their own starts too: the lower cost is kept, so a track that
drifted is caught again. A frame that costs far more than the keyframes did is re-detected
(redetect.py): tried again turned to the other facings, a turn kept where it halves the cost; the
next frame then starts from it without velocity.

`bridge` fills the lost frames: interpolated between the seen frames around them (spherical for
rotations), held before the first and after the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..fitting import solver
from ..fitting.terms.projection import focal_scaled
from ..rotations import quat_from_axis_angle, quat_slerp, quat_to_axis_angle
from . import params, redetect, stacked
from .frame import Frame, frame_terms


@dataclass
class Track:
    frames: list  # (T,) the followed animal's Frame, or None
    x: np.ndarray  # (T, n_params)
    tracked: np.ndarray  # (T,) bool
    cost: np.ndarray  # (T,) the frame's data cost at its solution (NaN: lost)
    terms: list  # (T,) the frame's terms on the clip's model, or None
    redetected: np.ndarray  # (T,) bool: the solution is a re-detection's turn (redetect.py)


def frame_cost(terms_, x) -> float:
    return float(solver.cost(terms_, x)[0])


def rest_shape(model, x):
    """The instance's rest skeleton and mesh for x's shape (the clip's: computed once)."""
    from ..fitting.rig import instance_rest_points, scaled_rest_skeleton

    t = model.ctx.template
    _, _, _, sg, s, th = model.bones(x)
    rest = scaled_rest_skeleton(model.ctx.skeleton, sg, s)
    verts = instance_rest_points(model.ctx.skeleton, t.vertices, t.skin_joints, t.skin_weights, sg, s,
                                 instance=rest, thickness=th)
    return rest, verts


def grid_iou(model, frame: Frame, x, shape) -> float:
    """The rig's outline through the frame's crop camera against its grid mask; shape: rest_shape."""
    from ..skinning import linear_blend_skinning

    if frame.mask is None:
        return float("nan")
    template = model.ctx.template
    rest, verts = shape
    rm = model.bones(x)[0]
    g = rest.forward_kinematics(params.local_quaternions(model, x))
    v = linear_blend_skinning(verts, template.skin_joints, template.skin_weights, rest.skinning_matrices(g))
    k = focal_scaled(frame.k_crop, model.log_focal(x))
    return metrics.rig_iou(v @ rm.T + x[3:6], template.faces, k, frame.mask)


def anchor(keyx: dict, keycost: dict, obs) -> int:
    """The keyframe tracking starts from: the one whose solution costs least (a weak predictor's
    facing is ambiguous in some frames and not in others: the clearest frame decides), or the
    first seen frame where a frame holds several animals (the first frame's choice is followed)."""
    first = min(keyx)
    if any(len(o) > 1 for o in obs):
        return first
    return min(keyx, key=lambda t: keycost.get(t, np.inf))


def _angle(x0, x1) -> float:
    from ..rotations import matrix_from_axis_angle

    r = matrix_from_axis_angle(x0[0:3]).T @ matrix_from_axis_angle(x1[0:3])
    return float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))


def track(model, samples, obs, keyx: dict, options, report, cancelled, keycost: dict | None = None) -> Track:
    """Forward from the anchor keyframe to the clip's end, then backward from it to the start."""
    from .fit import _check

    n = len(obs)
    start = anchor(keyx, keycost or {}, obs)
    x = np.tile(keyx[start], (n, 1))
    tr = Track([None] * n, x, np.zeros(n, dtype=bool), np.full(n, np.nan), [None] * n, np.zeros(n, dtype=bool))
    shape = rest_shape(model, keyx[start])
    reference = float(np.median(list(keycost.values()))) if keycost else float("nan")
    failed = {}  # the last re-detection that kept nothing: {"t": frame, "cost": its cost}
    done = [0]

    def step(t, prev, prev2, first_choice):
        _check(cancelled)
        done[0] += 1
        report("track", done[0] / n)
        if not obs[t]:
            return False
        _solve_frame(model, samples, obs, keyx, options, tr, t, prev, prev2, start, first_choice, shape, reference,
                     failed)
        return tr.tracked[t]

    for order in (range(start, n), range(start - 1, -1, -1)):
        backward = order.start != start
        prev = start if backward and tr.tracked[start] else None
        prev2 = start + 1 if prev is not None and start + 1 < n and tr.tracked[start + 1] else None
        for t in order:
            if step(t, prev, prev2, t == start and not backward):
                # no velocity across a re-detected turn: it is the track's error, not the animal's motion
                prev2, prev = (None if tr.redetected[t] else prev), t
    return tr


def _solve_frame(model, samples, obs, keyx, options, tr, t, prev, prev2, start, first_choice, shape, reference,
                 failed):
    from .fit import _photo_options

    cols = params.pose_columns(model)
    if prev is None:
        x_pred = keyx[t].copy() if t in keyx else tr.x[start].copy()
    else:
        x_pred = tr.x[prev].copy()
        if prev2 is not None:  # motion goes on at its last pace per frame: the root's fully, the joints' in part
            v = (tr.x[prev] - tr.x[prev2]) * (t - prev) / (prev - prev2)
            x_pred[3:6] += v[3:6]
            x_pred[0:3] += options.joint_velocity_gain * v[0:3]
            x_pred[7:model.col_scale] += options.joint_velocity_gain * v[7:model.col_scale]
    built = []
    cands = obs[t][: 1 if first_choice else None]
    for fr in cands:
        po = _photo_options(options, fr.pm)
        ts = frame_terms(model, fr, samples, po, po.points3d_weight, po.fit.pose_weight)
        # the cost at the predicted pose picks the animal; with one there is nothing to pick
        built.append((frame_cost(ts, x_pred) if len(cands) > 1 else 0.0, fr, ts))
    _, fr, ts = min(built, key=lambda b: b[0])
    starts = [x_pred]
    if t in keyx and prev is not None:
        # a keyframe's own solution restarts a track that drifted, but not one that turned round
        kx = params.unwrap(model, np.stack([x_pred, keyx[t]]))[1]
        if _angle(x_pred, kx) < np.radians(60):
            starts.append(kx)
    best = None
    for x0 in starts:
        sol = solve_pose(model, ts, x0, cols, options.track_iterations, options.photo.tol)
        if best is None or sol[1] < best[1]:
            best = sol
    turned = 0
    # a re-detection that found no turn is not tried again for a few frames unless the cost grows
    if redetect.needed(best[1], reference, options.redetect_ratio) and not (
            failed and abs(t - failed["t"]) <= options.redetect_cooldown and best[1] <= failed["cost"]):
        *best, turned = redetect.redetect(model, ts, best[0], best[1], cols, options)
        if not turned:
            failed.update(t=t, cost=best[1])
    iou = grid_iou(model, fr, best[0], shape)
    if np.isfinite(iou) and iou < options.min_rig_iou:
        return
    tr.x[t], tr.tracked[t], tr.cost[t], tr.redetected[t] = best[0], True, best[1], turned != 0
    tr.frames[t], tr.terms[t] = fr, ts


def solve_pose(model, terms_, x0: np.ndarray, cols: np.ndarray, iterations: int, tol: float):
    """(x, cost): Levenberg-Marquardt over the pose columns `cols` of one frame's x, the steps of
    solver.levenberg_marquardt on the stacked solve's assembly of the normal equations (one
    weighted product for all terms), the chain's Jacobians without the shape's columns."""
    zidx = np.full(len(x0), -1)
    zidx[cols] = np.arange(len(cols))
    block = stacked.Block(x0, zidx, terms_)
    with params.pose_only(model):
        sol = stacked.solve([block], [], np.asarray(x0, dtype=np.float64)[cols], iterations, tol, tries=8)
    return block.x(sol.z), sol.cost


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
