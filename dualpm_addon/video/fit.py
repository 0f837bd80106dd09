"""The temporal fit: one rig for a whole clip, its pose per frame (issue 16, "Animate from video").

Input: one predict_photo dict per frame (None where no animal was found; a list of dicts, one per
animal, where several were found). Steps (docs/video.md, "Method"):

1. Observe (frame.py): each frame's kept points, its cloud on its pixels, the solver's subsets.
2. Shape (shape.py): the photo fit on a few keyframes, then one solve over them with one shape
   (bone lengths, thickness, global scale, focal length) and each keyframe's own pose. The shape
   is then frozen: per frame only the pose and the root change.
3. Track (track.py): frame after frame, each started from the previous one (its root moving on
   at the previous velocity), the animal chosen by its cost where a frame holds several, a few
   LM iterations on the frame's terms; a frame that costs far more than the keyframes did is
   re-detected (redetect.py: turned to the other facings); one whose rig no longer covers its
   mask is lost.
4. Smooth (window.py): overlapping windows solved jointly with the data, smoothness of joint
   angles and of root velocity, and feet in contact held still (fitting/terms/smoothness.py,
   contact.py); the frames before a window are its fixed boundary, so cost is linear in length.
5. Bridge: lost frames between seen ones are interpolated, before the first or after the last
   one held; they are flagged, never dropped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import DualPMError
from ..fitting import FitOptions, PhotoOptions
from ..fitting.blas import single_threaded_blas
from ..fitting.rig import instance_rest_points, scaled_rest_skeleton
from ..fitting.terms.projection import focal_scaled
from . import params
from .frame import FrameBudget


@dataclass(frozen=True)
class ClipOptions:
    """Knobs of the clip fit; the defaults are what docs/video.md measures.

    photo: the photo fit's options (term weights, subsets) for every frame and the keyframes'
        photo fits (the clip's own outline fill, weights and ranking); its fit.pose_weight is
        replaced by pose_weight_exact / pose_weight_predicted by the kind of map.
    fps: frames per second of the clip (contact speeds are per second).
    keyframes: frames the shape is solved on; shape_iterations: LM iterations of that solve.
    track_iterations: LM iterations per frame while tracking; joint_velocity_gain: the share of
        the joints' (and the root rotation's) last velocity a frame's start goes on with.
    window, overlap: frames solved together, and frames of the previous window held as their
        boundary; window_iterations: LM iterations per window (0: no temporal solve).
    angle_acceleration_weight, angle_velocity_weight: joint angle smoothness (radians per
        frame^2 and per frame), against the data terms, on exact maps; *_predicted: on a
        predictor's maps, whose noise needs more (as the pose prior does); root_acceleration_weight,
        root_velocity_weight: the root's (translation in body lengths, rotation in radians).
    contact_weight: a foot in contact stays put (body lengths per frame).
    redetect_ratio: a tracked frame whose data cost exceeds this times the keyframes' median is
        re-detected (redetect.py; 0: never); redetect_gain: a turn is kept where its cost is at
        most this share of the tracked one; redetect_root_iterations: root-only iterations per
        turn; redetect_refined: the best turns then solved with the whole pose;
        redetect_cooldown: frames after a re-detection that kept no turn in which none is tried
        unless the frame costs more than that one did.
    min_rig_iou: a frame whose rig covers its mask less than this is lost (bridged).
    place_camera: move each frame's cloud onto its pixels before fitting (predicted maps).
    budget: how many points, pixels and mesh samples of a frame each iteration looks at.
    """

    # The photo fit as the clip fit was tuned and measured with (docs/video.md): the nearest-sample
    # fill its per-frame terms use (frame.frame_terms), outline weights 1000, hypotheses ranked by
    # cost, the best one refined. The photo fit's own defaults since 91a6071 (coverage fill,
    # weights 10000, ranking by outline IoU, three refined) took the clip's exact-map joint error
    # from 3.22 to 5.18 %; with only the weights at 1000 it was 3.23 %, and 19.3 % against 16.0 on
    # predicted maps; three refined starts by cost made the keyframes half as slow again.
    photo: PhotoOptions = field(default_factory=lambda: PhotoOptions(
        inside_weight=1000.0, fill_weight=1000.0, fill="nearest", by_outline=False, refined=1))
    pose_weight_exact: float = FitOptions.pose_weight
    pose_weight_predicted: float = 0.01
    fps: float = 12.0
    keyframes: int = 5
    shape_iterations: int = 8
    track_iterations: int = 4
    joint_velocity_gain: float = 0.5
    window: int = 8
    overlap: int = 2
    window_iterations: int = 3
    angle_acceleration_weight: float = 3.0
    angle_velocity_weight: float = 0.3
    angle_acceleration_weight_predicted: float = 10.0
    angle_velocity_weight_predicted: float = 10.0
    root_acceleration_weight: float = 10.0
    root_velocity_weight: float = 0.3
    contact_weight: float = 30.0
    redetect_ratio: float = 2.5
    redetect_cooldown: int = 4
    redetect_gain: float = 0.5
    redetect_root_iterations: int = 2
    redetect_refined: int = 2
    min_rig_iou: float = 0.2
    place_camera: bool = True
    budget: FrameBudget = field(default_factory=FrameBudget)
    seed: int = 0


@dataclass
class ClipFit:
    """The fitted clip. T frames, J joints of the reference rig, V mesh vertices.

    rest_skeleton: the instance's rest skeleton (one for the clip); rotations (T, J, 4) local
    quaternions; model_to_camera (T, 4, 4) rigid root placement (camera space, OpenCV, metres);
    intrinsics (T, 3, 3) in the video frame's pixels; tracked (T,) the animal was seen and fitted;
    bridged (T,) lost and interpolated; rig_iou (T,) the rig's outline against the frame's mask
    (in the crop grid; NaN where no mask); joints_cam (T, J, 3); rest_vertices (V, 3) model
    space; faces, skin_joints, skin_weights; global_scale, bone_scales (J,), thickness (J,);
    focal_factor: the solved focal length over the frames' given one; body_length (m);
    contacts (T, 4) feet in contact (foot_names); cost (T,) each frame's data cost; redetected (T,)
    the frame's rig was turned back onto the animal by a re-detection (redetect.py); timings (s).
    """

    joint_names: list
    parents: np.ndarray
    rest_skeleton: object
    rotations: np.ndarray
    model_to_camera: np.ndarray
    intrinsics: np.ndarray
    tracked: np.ndarray
    bridged: np.ndarray
    rig_iou: np.ndarray
    joints_cam: np.ndarray
    faces: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    global_scale: float
    bone_scales: np.ndarray
    thickness: np.ndarray
    timings: dict
    rest_vertices: np.ndarray = None
    focal_factor: float = 1.0
    body_length: float = float("nan")
    foot_names: tuple = ()
    contacts: np.ndarray = None
    cost: np.ndarray = None
    redetected: np.ndarray = None
    photo_size: tuple = (0, 0)
    options: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(len(self.rotations))

    def posed_vertices(self, t: int) -> np.ndarray:
        """(V, 3) camera space: the rest mesh skinned by frame t's pose, placed by its root."""
        from ..skinning import linear_blend_skinning

        g = self.rest_skeleton.forward_kinematics(self.rotations[t])
        v = linear_blend_skinning(self.rest_vertices, self.skin_joints, self.skin_weights,
                                  self.rest_skeleton.skinning_matrices(g))
        m = self.model_to_camera[t]
        return v @ m[:3, :3].T + m[:3, 3]

    def to_dict(self) -> dict:
        """Per-frame figures and the shape, for NAME.json (plain lists and numbers)."""
        def f(v):
            return None if not np.isfinite(v) else round(float(v), 5)

        per_frame = []
        for t in range(self.num_frames):
            row = {"frame": t, "tracked": bool(self.tracked[t]), "bridged": bool(self.bridged[t]),
                   "rig_iou": f(self.rig_iou[t]), "cost": None if self.cost is None else f(self.cost[t]),
                   "focal_px": round(float(self.intrinsics[t, 0, 0]), 3),
                   "root_translation_m": [round(float(v), 5) for v in self.model_to_camera[t, :3, 3]]}
            if self.redetected is not None:
                row["redetected"] = bool(self.redetected[t])
            if self.contacts is not None:
                row["feet_in_contact"] = [n for n, c in zip(self.foot_names, self.contacts[t]) if c]
            per_frame.append(row)
        ious = self.rig_iou[np.isfinite(self.rig_iou)]
        return {
            "frames": self.num_frames, "frames_tracked": int(self.tracked.sum()),
            "frames_bridged": int(self.bridged.sum()),
            "frames_redetected": None if self.redetected is None else int(self.redetected.sum()),
            "rig_iou_mean": f(ious.mean()) if len(ious) else None,
            "shape": {"global_scale": round(float(self.global_scale), 6), "body_length_m": f(self.body_length),
                      "focal_factor": round(float(self.focal_factor), 6),
                      "bone_scales": {n: round(float(s), 5) for n, s in zip(self.joint_names, self.bone_scales)},
                      "thickness": {n: round(float(s), 5) for n, s in zip(self.joint_names, self.thickness)}},
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "options": self.options,
            "per_frame": per_frame,
        }


def _check_frames(frames) -> list[list[dict]]:
    if frames is None or len(frames) == 0:
        raise DualPMError("animate: the clip has no frames")
    out = []
    for t, fr in enumerate(frames):
        if fr is None:
            out.append([])
        elif isinstance(fr, dict):
            out.append([fr])
        elif isinstance(fr, (list, tuple)) and all(isinstance(c, dict) for c in fr):
            out.append(list(fr))
        else:
            raise DualPMError(f"animate: frame {t} is a {type(fr).__name__}, expected a dual point map dict, "
                              "a list of them (one per animal) or None")
    return out


def fit_clip(frames: list, template=None, options: ClipOptions | None = None, report=None,
             cancelled=None, observed: "FrameObserver | None" = None) -> ClipFit:
    """Fit one rig to a clip (module docstring).

    frames: per-frame dicts from preprocess.predict_photo (None: no animal found or the frame
    failed; a list of dicts: several animals, the one chosen in the first frame is followed, the
    first of the list (the largest) by default). report(stage, fraction) is called per frame;
    cancelled() is checked between frames (pipeline.Cancelled is raised). A clip where no frame
    shows an animal is a one-line DualPMError. observed: a FrameObserver that was fed these
    frames' dicts while they were predicted; what it observed of the same dicts, with the same
    template and options, is taken as it is (the result is the same as without it)."""
    from ..pipeline import fit_context

    options = options or ClipOptions()
    cands = _check_frames(frames)
    if template is None:
        from ..template import load_default

        template = load_default()
    report = report or (lambda stage, fraction: None)
    pre, pre_fits = {}, {}
    if observed is not None:
        done = observed.close()  # its thread ends before this one holds BLAS to one thread
        if observed.template is template and observed.options == options:
            pre, pre_fits = done, observed.keyframe_fits
    with single_threaded_blas():
        return _fit_clip(cands, template, fit_context(template), options, report, cancelled, pre, pre_fits)


def _observe_frame(cs: list, t: int, ctx, options: ClipOptions) -> list:
    """frame.observe on each of a frame's candidate dicts: the animals it shows."""
    from .frame import observe

    seen = []
    for c in cs:
        o = observe(c, t, ctx, _photo_options(options, c), options.place_camera, options.seed + t, options.budget)
        if o is not None:
            seen.append(o)
    return seen


class FrameObserver:
    """The fit's first step (frame.observe) on a thread of its own, fed each frame's dict as soon
    as inference has it (infer.predict_frames' on_map), so that it runs while the predictor does:
    on two cores ONNX Runtime's second thread gains a 160-pixel crop little (19.4 against 17.1 ms,
    load 2.5), and the predictor's runs release the GIL. On the 120-frame cat clip inference took
    3.6 s and observing 2.3 s one after the other, 4.0 s both at once (load 1.7). Given the clip's
    length (`frames`), the shape's keyframe photo fits (shape.keyframe_fit) are made here too, on
    the keyframes the clip has when every frame shows one animal (shape.keyframes). fit_clip
    (observed=...) takes what was made on the same dicts and makes the rest; close() ends the
    thread.

    The thread holds BLAS to one thread while it runs, as the fit does (fitting/blas.py)."""

    def __init__(self, template, options: ClipOptions, frames: int | None = None, thread: bool = True):
        import queue
        import threading

        from ..pipeline import fit_context

        self.template, self.options = template, options
        self.ctx = fit_context(template)
        self.seconds = 0.0  # time spent observing on the thread
        self.keyframe_fits: dict = {}  # {t: (the first animal's dict, shape.keyframe_fit's result)}
        self._keys = set()
        if frames and options.keyframes > 0:
            from .shape import keyframes

            self._keys = set(keyframes(list(range(int(frames))), [[None]] * int(frames), options.keyframes))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done: dict = {}
        self._stop = False
        self._thread = None
        if thread:
            self._thread = threading.Thread(target=self._run, name="dualpm-observe", daemon=True)
            self._thread.start()

    def submit(self, t: int, frame) -> None:
        """Frame t's final entry (fit_clip's per-frame form); cheap, from any thread. Without a
        thread (thread=False: fit_process's child, which has a core of its own) it is observed
        here and now."""
        if self._thread is None:
            self._observe(int(t), frame)
        else:
            self._queue.put((int(t), frame))

    def _run(self):
        with single_threaded_blas():
            while True:
                item = self._queue.get()
                if item is None or self._stop:
                    return
                self._observe(*item)

    def _observe(self, t: int, frame) -> None:
        tic = time.perf_counter()
        try:
            cs = _check_frames([frame])[0]
            seen = _observe_frame(cs, t, self.ctx, self.options)
            self._done[t] = (cs, seen)
            if t in self._keys and seen:
                from .shape import keyframe_fit

                self.keyframe_fits[t] = (seen[0].pm, keyframe_fit(self.ctx, seen[0], t, self.options))
        except Exception:  # noqa: BLE001 - fit_clip does this frame itself and meets the error there
            self._done.pop(t, None)
            self.keyframe_fits.pop(t, None)
        self.seconds += time.perf_counter() - tic

    def close(self) -> dict:
        """Wait for what was submitted; {t: (the candidate dicts, their observations)}."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return dict(self._done)

    def cancel(self) -> None:
        """Stop after the frame in hand (inference failed or was cancelled)."""
        self._stop = True
        self._queue.put(None)


def _check(cancelled):
    if cancelled is not None and cancelled():
        from ..pipeline import Cancelled

        raise Cancelled("cancelled")


def _fit_clip(cands, template, ctx, options: ClipOptions, report, cancelled, pre=None, pre_fits=None) -> ClipFit:
    from . import shape, track, window
    from .frame import SharedSamples, exact_confidence

    timings = {}
    n = len(cands)
    tic = time.perf_counter()
    obs = []
    pre = pre or {}
    for t, cs in enumerate(cands):
        _check(cancelled)
        got = pre.get(t)
        if got is not None and len(got[0]) == len(cs) and all(a is b for a, b in zip(got[0], cs)):
            obs.append(got[1])
        else:
            obs.append(_observe_frame(cs, t, ctx, options))
        report("observe", (t + 1) / n)
    timings["observe"] = time.perf_counter() - tic
    seen_frames = [t for t in range(n) if obs[t]]
    if not seen_frames:
        raise DualPMError(f"animate: no frame of the clip shows an animal (0 of {n} frames)")

    model = params.clip_model(ctx)
    samples = SharedSamples(model, template, options.budget.vertices)
    tic = time.perf_counter()
    keyx, keycost, w3d = shape.solve_shape(model, samples, obs, seen_frames, options, report, cancelled, pre_fits)
    timings["shape"] = time.perf_counter() - tic
    # every frame's 3D term weighs what the keyframes' photo fits found P deserves
    options = replace(options, photo=replace(options.photo, points3d_weight=w3d, points3d_spread=0.0))
    _check(cancelled)

    tic = time.perf_counter()
    tr = track.track(model, samples, obs, keyx, options, report, cancelled, keycost)
    timings["track"] = time.perf_counter() - tic

    tic = time.perf_counter()
    contacts = np.zeros((n, len(window.FEET)), dtype=bool)
    if options.window_iterations > 0:
        exact = all(exact_confidence(f.pm) for f in tr.frames if f is not None)
        contacts = window.smooth(model, samples, tr, options, report, cancelled, exact)
    timings["smooth"] = time.perf_counter() - tic

    tic = time.perf_counter()
    xs, bridged = track.bridge(model, tr.x, tr.tracked)
    out = _result(model, template, tr, xs, bridged, contacts, options)
    timings["output"] = time.perf_counter() - tic
    timings["total"] = sum(timings.values())
    timings["fit_per_frame"] = timings["total"] / n
    out.timings = timings
    return out


def _photo_options(options: ClipOptions, pm: dict) -> PhotoOptions:
    from dataclasses import replace

    from .frame import exact_confidence

    pw = options.pose_weight_exact if exact_confidence(pm) else options.pose_weight_predicted
    return replace(options.photo, fit=replace(options.photo.fit, pose_weight=pw, seed=options.seed))


def _result(model, template, tr, xs, bridged, contacts, options: ClipOptions) -> ClipFit:
    from .. import metrics
    from ..skinning import linear_blend_skinning

    ctx = model.ctx
    sk = ctx.skeleton
    n = len(xs)
    x0 = xs[0]
    _, _, _, sg, scales, thick = model.bones(x0)
    rest = scaled_rest_skeleton(sk, sg, scales)
    rest_v = instance_rest_points(sk, template.vertices, template.skin_joints, template.skin_weights, sg, scales,
                                  instance=rest, thickness=thick)
    rot = np.stack([params.local_quaternions(model, x) for x in xs])
    m2c = np.stack([params.model_to_camera(x) for x in xs])
    joints = np.stack([params.joints_camera(model, x) for x in xs])
    log_focal = model.log_focal(x0)
    focal = float(np.exp(log_focal))
    ref = next(f for f in tr.frames if f is not None)
    k_ref = ref.photo_intrinsics(focal)
    ks = np.stack([f.photo_intrinsics(focal) if f is not None else k_ref for f in tr.frames])
    iou = np.full(n, np.nan)
    for t, f in enumerate(tr.frames):
        if f is None or f.mask is None or not tr.tracked[t]:
            continue
        g = rest.forward_kinematics(rot[t])
        v = linear_blend_skinning(rest_v, template.skin_joints, template.skin_weights, rest.skinning_matrices(g))
        k = focal_scaled(f.k_crop, log_focal)
        iou[t] = metrics.rig_iou(v @ m2c[t, :3, :3].T + m2c[t, :3, 3], template.faces, k, f.mask)
    h, w = ref.photo_size
    return ClipFit(
        joint_names=list(sk.joint_names), parents=np.asarray(sk.parents).copy(), rest_skeleton=rest, rotations=rot,
        model_to_camera=m2c, intrinsics=ks, tracked=tr.tracked.copy(), bridged=bridged, rig_iou=iou,
        joints_cam=joints, faces=np.asarray(template.faces).copy(), skin_joints=np.asarray(template.skin_joints).copy(),
        skin_weights=np.asarray(template.skin_weights).copy(), global_scale=float(sg), bone_scales=scales.copy(),
        thickness=thick.copy(), timings={}, rest_vertices=rest_v, focal_factor=focal,
        body_length=float(np.ptp(rest_v[:, 1])), foot_names=tuple(sk.joint_names[j] for j in _feet(sk)),
        contacts=contacts, cost=tr.cost.copy(), redetected=tr.redetected.copy(), photo_size=(int(h), int(w)),
        options={k: v for k, v in asdict(options).items() if k not in ("photo", "budget")})


def _feet(sk):
    from .window import FEET

    return [sk.index(f) for f in FEET if f in sk.joint_names]
