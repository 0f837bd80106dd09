"""Re-detection: a tracked frame that costs far more than the keyframes' photo fits did is tried
again turned to the other facings, and a turn is kept where it halves the frame's cost.

A track started from the previous frame can slide into a local minimum in which the rig faces
away from where the animal does (a head-to-tail or side-on flip reprojects the trunk almost as
well) and, since every frame starts where the last one ended, it stays there. On the Muybridge
cat clip the tracked rig was 98-168 degrees from the frame's own photo fit, at 2-3x its cost
(docs/video.md). The tracked pose is turned about the camera's vertical axis through the body by
a quarter, a half and three quarters of a turn (the turns a few LM iterations cannot undo), the
root alone solved from each, and the best then solved with the whole pose.

The turn must halve the cost, not merely lower it: on a weak predictor's maps a wrong facing
can cost a little less than the right one in a single frame (on the held-out horse Gallop_Jump
clip, turns that lowered the cost by 20-40 % were all wrong and took its joint error from 14 to
19 %), while a track that has lost the animal costs 2-3x what a fit that has it does.
"""

from __future__ import annotations

import numpy as np

from ..rotations import matrix_from_axis_angle, matrix_to_quat, quat_to_axis_angle
from . import params

TURNS_DEG = (90, 180, 270)  # about camera y (down): 90 turns a rig facing camera-right to face the camera
ROOT_COLUMNS = np.arange(6)  # the root's rotation and translation


def turned(model, x: np.ndarray, degrees: float) -> np.ndarray:
    """x with the animal turned by `degrees` about the camera's vertical axis (camera y) through
    the mean of its joints: the pose and where the body is stay, the facing changes."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    centre = params.joints_camera(model, x).mean(axis=0)
    out = np.array(x, dtype=np.float64)
    out[0:3] = params.nearest_equivalent(quat_to_axis_angle(matrix_to_quat(ry @ matrix_from_axis_angle(x[0:3]))),
                                         x[0:3])
    out[3:6] = ry @ (x[3:6] - centre) + centre
    return out


def needed(cost: float, reference: float, ratio: float) -> bool:
    """Whether a tracked frame's data cost says the track may have lost the animal: above `ratio`
    times the reference (the keyframes' median). ratio <= 0: never."""
    return bool(ratio > 0 and np.isfinite(reference) and reference > 0 and cost > ratio * reference)


def redetect(model, terms_, x: np.ndarray, cost: float, cols: np.ndarray, options):
    """(x, cost, degrees turned; 0: the tracked solution x, whose cost is `cost`, kept) for one
    frame's terms. Each turn is root-solved options.redetect_root_iterations, the best
    options.redetect_refined then over `cols` for twice options.track_iterations; the lowest
    cost wins if it is at most options.redetect_gain times `cost`."""
    from .track import solve_pose

    tol = options.photo.tol
    roots = []
    held = model.root_only
    model.root_only = True  # the chain's Jacobian of the root's columns alone: ROOT_COLUMNS lead it
    try:
        for deg in TURNS_DEG:
            xr, c = solve_pose(model, terms_, turned(model, x, deg), ROOT_COLUMNS, options.redetect_root_iterations, tol)
            roots.append((c, deg, xr))
    finally:
        model.root_only = held
    roots.sort(key=lambda r: r[0])
    best = (x, cost, 0)
    for _, deg, xr in roots[:options.redetect_refined]:
        xf, cf = solve_pose(model, terms_, xr, cols, 2 * options.track_iterations, tol)
        if cf <= options.redetect_gain * cost and cf < best[1]:
            best = (xf, cf, deg)
    return best
