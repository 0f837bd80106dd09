"""The temporal solve: the tracked clip refined in overlapping windows, each solved jointly over
its frames with their data terms and the coupling terms (fitting/terms/smoothness.py: joint
angles and root, acceleration and velocity; contact.py: feet in contact stay put).

Windows hold `window` new frames and re-solve the last `overlap` frames of the previous window;
the two frames before a window enter as its fixed boundary, so the acceleration rows run across
the seam. Every frame is solved in about (window + overlap) / window windows: the cost is
linear in the clip's length. Lost frames inside the tracked span are in the windows with no data
(their neighbours and the smoothness place them); the span's ends are held by track.bridge.

Contacts are found once on the tracked clip, as retargeting finds them (retarget.detect_contacts:
a foot low over the ground and slow), in camera space with the animal's mean up axis as the
ground's normal: a camera that stands still sees a planted foot still.
"""

from __future__ import annotations

import numpy as np

from ..fitting.terms.contact import FootContact
from ..fitting.terms.smoothness import TemporalDifference
from . import params, stacked

FEET = ("FF.L", "FF.R", "FFB.L", "FFB.R")  # hoof heads of the shared rig
LEG_TOP = {"FF.L": "FrontUpperLeg.L", "FF.R": "FrontUpperLeg.R", "FFB.L": "BackUpperLeg.L",
           "FFB.R": "BackUpperLeg.R"}
BOUNDARY = 2  # fixed frames before a window: what an acceleration row needs
CONTACT_SMOOTHING_S = 0.06  # seconds: the Gaussian that low-passes the tracked feet before detection
CONTACT_SPEED_TOL = 1.5  # leg lengths per second: a planted foot of the tracked clip moves slower (docs/video.md)


def foot_joints(sk) -> np.ndarray:
    return np.array([sk.index(f) for f in FEET if f in sk.joint_names], dtype=np.int64)


def leg_length(model, x) -> float:
    """Mean rest distance from the top of each leg to its foot, in the instance's metres."""
    from ..fitting.rig import scaled_rest_skeleton

    sk = model.ctx.skeleton
    _, _, _, sg, s, _ = model.bones(x)
    rest = scaled_rest_skeleton(sk, sg, s)
    d = [np.linalg.norm(rest.rest_heads[sk.index(f)] - rest.rest_heads[sk.index(LEG_TOP[f])])
         for f in FEET if f in sk.joint_names and LEG_TOP[f] in sk.joint_names]
    return float(np.mean(d)) if d else float(sg * np.ptp(model.ctx.template.vertices[:, 2]))


def detect(model, xs: np.ndarray, tracked: np.ndarray, fps: float) -> np.ndarray:
    """(T, K) bool: each foot's contacts over the tracked span (False outside it)."""
    from ..retarget import detect_contacts

    feet = foot_joints(model.ctx.skeleton)
    n = len(xs)
    out = np.zeros((n, len(feet)), dtype=bool)
    seen = np.nonzero(tracked)[0]
    if len(seen) < 3:
        return out
    lo, hi = seen[0], seen[-1] + 1
    pos = np.stack([params.joints_camera(model, xs[t])[feet] for t in range(lo, hi)])
    if len(pos) > 3:  # a tracked foot jitters: its low-passed path says better whether it is planted
        from scipy.ndimage import gaussian_filter1d

        pos = gaussian_filter1d(pos, CONTACT_SMOOTHING_S * fps, axis=0, mode="nearest")
    up = np.mean([params.model_to_camera(xs[t])[:3, 2] for t in seen], axis=0)
    up /= max(np.linalg.norm(up), 1e-12)
    out[lo:hi] = detect_contacts(pos, up, leg_length(model, xs[seen[0]]), fps, speed_tol=CONTACT_SPEED_TOL)
    out[~tracked] = False
    return out


def coupling_terms(model, blocks, contacts_in_window, options, body_length: float, nz: int,
                   exact: bool = False) -> list:
    joints = params.rotation_columns(model)
    root_t = np.arange(3, 6)
    scale_t = np.full(3, 1.0 / body_length)
    out = []
    acc = options.angle_acceleration_weight if exact else options.angle_acceleration_weight_predicted
    vel = options.angle_velocity_weight if exact else options.angle_velocity_weight_predicted
    for cols, order, w, cs in ((joints, 2, acc, None),
                               (joints, 1, vel, None),
                               (np.arange(0, 3), 2, options.root_acceleration_weight, None),
                               (np.arange(0, 3), 1, options.root_velocity_weight, None),
                               (root_t, 2, options.root_acceleration_weight, scale_t),
                               (root_t, 1, options.root_velocity_weight, scale_t)):
        if w > 0:
            out.append(TemporalDifference(blocks, cols, order, w, cs, nz=nz))
    if options.contact_weight > 0:
        pairs = [(i - 1, i, k) for i in range(1, len(blocks)) for k in range(contacts_in_window.shape[1])
                 if contacts_in_window[i - 1, k] and contacts_in_window[i, k]]
        if pairs:
            out.append(FootContact(blocks, model, foot_joints(model.ctx.skeleton), pairs, 1.0 / body_length,
                                   options.contact_weight, nz))
    return out


SPLIT_MIN_WINDOWS = 4  # a tracked span of at least this many windows is swept in two halves
SEAM_FRAMES = 8  # frames the window across the halves' seam re-solves


def smooth(model, samples, tr, options, report, cancelled, exact: bool = False) -> np.ndarray:
    """Refine tr.x in place over windows; returns the contacts (T, K). exact: the maps are
    ground truth (the lighter smoothing).

    A span of SPLIT_MIN_WINDOWS windows or more is swept in two halves from its middle, each half
    starting from the tracked clip (the second half's boundary is the tracked frames before it),
    then one window of SEAM_FRAMES frames across the seam, held by the halves' frames on both
    sides. The halves run at once in two processes where that is allowed (forked.allowed), one
    after the other elsewhere: the same result."""
    from . import forked
    from .fit import _check
    from .track import bridge

    n = len(tr.x)
    seen = np.nonzero(tr.tracked)[0]
    contacts = np.zeros((n, len(foot_joints(model.ctx.skeleton))), dtype=bool)
    if len(seen) < 3:
        return contacts
    tr.x[:] = bridge(model, tr.x, tr.tracked)[0]  # lost frames start between their neighbours
    tr.x[:] = params.unwrap(model, tr.x)  # differences across frames must not see a 2 pi jump
    contacts = detect(model, tr.x, tr.tracked, options.fps)
    lo, hi = int(seen[0]), int(seen[-1]) + 1
    body_length = float(np.exp(tr.x[lo, 6]) * model.ctx.template.body_length)
    w = max(1, int(options.window))
    solve = _WindowSolver(model, tr, contacts, options, body_length, exact)
    if hi - lo < SPLIT_MIN_WINDOWS * w:
        solve.sweep(tr.x, lo, hi, lo, lambda f: (_check(cancelled), report("smooth", f)))
        return contacts
    mid = lo + (hi - lo) // 2
    tracked = tr.x.copy()

    def second(progress=None):
        x = tracked.copy()
        solve.sweep(x, mid, hi, lo, progress)
        return x[mid:hi]

    job = forked.Forked(second) if forked.allowed() else None
    try:
        solve.sweep(tr.x, lo, mid, lo, lambda f: (_check(cancelled), report("smooth", 0.9 * f * (mid - lo) / (hi - lo))))
        tr.x[mid:hi] = job.result() if job is not None else second(lambda f: _check(cancelled))
    finally:
        if job is not None:
            job.kill()
    _check(cancelled)
    a, b = max(lo, mid - SEAM_FRAMES // 2), min(hi, mid + SEAM_FRAMES // 2)
    solve.window(tr.x, a, b, list(range(max(lo, a - BOUNDARY), a)), list(range(b, min(hi, b + BOUNDARY))))
    report("smooth", 1.0)
    return contacts


class _WindowSolver:
    """The stacked solve of one window: its frames' pose from z, fixed frames around it."""

    def __init__(self, model, tr, contacts, options, body_length: float, exact: bool):
        self.model, self.tr, self.contacts, self.options = model, tr, contacts, options
        self.body_length, self.exact = body_length, exact
        self.pose = params.pose_columns(model)

    def window(self, x: np.ndarray, a: int, b: int, before: list, after: list) -> None:
        """Solve frames [a, b) of x in place, the frames `before` and `after` held."""
        model, pose, npose = self.model, self.pose, len(self.pose)
        held = np.full(model.n_params, -1)
        blocks = [stacked.Block(x[t], held, []) for t in before]
        for i, t in enumerate(range(a, b)):
            zidx = np.full(model.n_params, -1)
            zidx[pose] = i * npose + np.arange(npose)
            blocks.append(stacked.Block(x[t], zidx, self.tr.terms[t] or []))
        blocks += [stacked.Block(x[t], held, []) for t in after]
        nz = (b - a) * npose
        z0 = np.concatenate([x[t][pose] for t in range(a, b)])
        span = list(before) + list(range(a, b)) + list(after)
        coupling = coupling_terms(model, blocks, self.contacts[span], self.options, self.body_length, nz, self.exact)
        with params.pose_only(model):
            sol = stacked.solve(blocks, coupling, z0, self.options.window_iterations, self.options.photo.tol)
        for i, t in enumerate(range(a, b)):
            x[t] = blocks[len(before) + i].x(sol.z)

    def sweep(self, x: np.ndarray, start: int, stop: int, lo: int, progress=None) -> None:
        """Windows over [start, stop) of x in place, each re-solving the previous one's last
        `overlap` frames, the BOUNDARY frames before each held (none before the span's start lo)."""
        w, o = max(1, int(self.options.window)), max(0, int(self.options.overlap))
        s = start
        while s < stop:
            if progress is not None:
                progress((s - start) / max(stop - start, 1))
            a = start if s == start else max(start, s - o)
            b = min(stop, s + w)
            self.window(x, a, b, list(range(max(lo, a - BOUNDARY), a)), [])
            s = b
        if progress is not None:
            progress(1.0)
