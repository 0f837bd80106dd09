"""Photo to reconstruction, the bpy-free half of "Reconstruct from photo".

The Blender operators, `dualpm reconstruct` and the benchmarks all run this: decode (the caller's
job: Blender decodes through bpy, the command line through image_io), crop and infer
(preprocess.predict_photo with any predictor: the server client or the in-process Runner),
extract the amodal points, fit the skeleton, and give every point a rest position so that the
fitted rig deforms the cloud back onto the photo. The result is numpy only; turning it into a
Blender scene is operators/' job.

Progress goes to a `report(stage, fraction)` callback; a `cancelled()` callable is checked between
stages (a cancelled request raises Cancelled). `Job` runs any such function on a worker thread so
the UI can poll it from a timer.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import __version__, camera, pointmap
from .errors import DualPMError

STAGES = ("load", "inference", "fit", "import")
MIN_POINTS = 50  # fewer kept points than this and there is nothing to fit


class Cancelled(Exception):
    """The user cancelled the request (Esc in Blender, Ctrl-C on the command line)."""


@dataclass
class PhotoInput:
    """A decoded photo: rgb (H, W, 3) uint8 sRGB row 0 at the top; mask (H, W) bool or None."""

    rgb: np.ndarray
    mask: np.ndarray | None
    focal_mm: float | None
    source: str  # the file name, for messages
    path: str = ""
    sha256: str = ""


@dataclass
class Settings:
    occupancy_threshold: float = pointmap.OCCUPANCY_THRESHOLD
    confidence_threshold: float = pointmap.CONFIDENCE_THRESHOLD
    surface_pull: float = 0.0
    pose_weight: float | None = None  # the fit's pose prior; None: fit_skeleton.PREDICTED_POSE_WEIGHT
    place_camera: bool = True  # fit_camera: the cloud's distance, and the focal when EXIF had none
    fit: str = "photo"  # "photo": fitting.fit_to_photo (Q reprojected, the mask); "points": the 3D fit alone
    segmenter: str = "auto"  # "auto": the shipped U2-Net-p, else the predictor's mask; "off"; or a .onnx path
    character: str = "character"  # the surface: "character" (the photo baked on the character mesh), "template", "points"
    shape: bool = True  # the character deformed toward the cloud and the mask (character/deform.py), else the fit's
    delight: str = "auto"  # the photo's light out of the character's texture: "auto", "on", "off" (character/texture.py)
    seed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Reconstruction:
    """Everything the scene needs, in the photo's OpenCV camera space or the animal's model space.

    points: extract_points' dict (P camera space, Q, layer, confidence, colour, pixel in the crop;
    P_observed: P before the photo fit placed the cloud on the rig)
    point_rest (N, 3): model-space rest positions that the fitted pose skins onto P exactly;
    point_skin_joints/weights (N, 4); point_matched (N,) bool (Q matched the template).
    fit: fit_skeleton.SkeletonFit (rest skeleton, pose, model_to_camera, surface mesh, residuals).
    photo_intrinsics (3, 3) in the photo's pixels (the solved focal length where it was solved);
    photo_size (H, W); crop_box (4,). P is the cloud after fit_camera placed it.
    """

    source: str
    path: str
    sha256: str
    photo_size: tuple[int, int]
    photo_intrinsics: np.ndarray
    crop_box: np.ndarray
    points: dict
    point_rest: np.ndarray
    point_skin_joints: np.ndarray
    point_skin_weights: np.ndarray
    point_matched: np.ndarray
    fit: object
    template: object
    model_version: str
    settings: dict
    camera_fit: object = None  # fit_camera.CameraFit, or None when the cloud was taken as predicted
    timings: dict = field(default_factory=dict)
    photo_mask: np.ndarray | None = None  # (H, W) bool, the outline the fit used (photo pixels)
    mask_source: str = ""  # "user", "segmenter", "predictor" (preprocess.MASK_SOURCES) or "" (none)
    animals_found: int = 1
    animal_index: int = 1  # which animal of the photo, 1 = the largest (--all-animals)
    rig_iou: float = float("nan")  # the fitted surface through the photo's camera against photo_mask
    segmenter_note: str = ""  # why the segmenter was not used, when it was wanted
    character: object = None  # character.instance.Character with Settings.character == "character", else None

    @property
    def num_points(self) -> int:
        return int(len(self.points["P"]))

    def provenance(self) -> dict:
        return {"dualpm_version": __version__, "model_version": self.model_version,
                "input_file": self.path or self.source, "input_sha256": self.sha256,
                "parameters": dict(self.settings, crop_box=[round(float(v), 2) for v in self.crop_box],
                                   focal_px=round(float(self.photo_intrinsics[0, 0]), 3))}

    def summary(self) -> dict:
        fit = self.fit
        return {
            "photo": self.source, "sha256": self.sha256, "status": "ok",
            "model_version": self.model_version, "dualpm_version": __version__,
            "photo_size": [int(self.photo_size[1]), int(self.photo_size[0])],
            "points_kept": self.num_points, "points_matched": int(self.point_matched.sum()),
            "bones_fitted": int(np.sum((np.asarray(fit.flags) & 1) == 0)), "bones": int(len(fit.joint_names)),
            "bones_flagged": fit.bone_flags(),
            "fit_residual_rms_m": float(fit.residual_rms), "fit_residual_median_m": float(fit.residual_median),
            "fit_inlier_fraction": float(fit.inlier_fraction), "body_length_m": float(fit.body_length),
            "focal_px": float(self.photo_intrinsics[0, 0]),
            "camera": None if self.camera_fit is None else {
                "focal_solved": bool(self.camera_fit.focal_solved),
                "reprojection_px_median": float(self.camera_fit.residual_px_median),
                "reprojection_px_before": float(self.camera_fit.residual_px_before),
                "distance_m": float(self.camera_fit.distance)},
            "mask_source": self.mask_source or "none", "animals_found": int(self.animals_found),
            "animal_index": int(self.animal_index),
            "rig_iou": None if not np.isfinite(self.rig_iou) else round(float(self.rig_iou), 4),
            "photo_fit": dict(getattr(fit, "photo", {}) or {}),
            "segmenter_note": self.segmenter_note or None,
            "character": None if self.character is None else self.character.figures,
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "parameters": self.settings,
        }


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_version(predictor) -> str:
    """The ONNX model's `model_version` metadata: inference.Runner has it at the top level, the
    v2 server's model metadata (client.InferenceClient) under "parameters"."""
    meta = getattr(predictor, "metadata", None) or {}
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    return str(meta.get("model_version") or params.get("model_version") or "unknown")


def unskin(points_model: np.ndarray, skeleton, rotations: np.ndarray, skin_joints: np.ndarray,
           skin_weights: np.ndarray) -> np.ndarray:
    """Rest positions x with sum_k w_k S_k x = p for posed model-space points p (N, 3).

    Linear blend skinning is affine per point, so its inverse is one 3x3 solve per point; this is
    exactly what Blender's Armature modifier undoes when it skins the rest positions back.
    """
    g = skeleton.forward_kinematics(rotations)
    s = skeleton.skinning_matrices(g)
    blended = np.einsum("nk,nkij->nij", np.asarray(skin_weights, dtype=np.float64), s[np.asarray(skin_joints), :3, :])
    rhs = np.asarray(points_model, dtype=np.float64) - blended[:, :, 3]
    return np.linalg.solve(blended[:, :, :3], rhs[..., None])[..., 0]


def _check(cancelled) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled")


def reconstruct(predictor, photo: PhotoInput, template=None, settings: Settings | None = None,
                report=None, cancelled=None, timings: dict | None = None, before_fit=None) -> Reconstruction:
    """Crop and infer, extract points, fit; every failure the user can cause is a DualPMError.
    `before_fit()`, when given, is called between the two (a caller's warm-up to wait for)."""
    from . import preprocess

    report = report or (lambda stage, fraction: None)
    timings = {} if timings is None else timings
    _check(cancelled)
    report("inference", 0.0)
    settings = settings or Settings()
    segmenter, segmenter_note = (None, "") if photo.mask is not None else load_segmenter(settings.segmenter)
    t0 = time.perf_counter()
    pm = preprocess.predict_photo(predictor, photo.rgb, photo.mask, photo.focal_mm, photo.source, segmenter=segmenter)
    if segmenter_note:
        pm["segmenter_note"] = segmenter_note
    timings["inference"] = time.perf_counter() - t0
    _check(cancelled)
    if before_fit is not None:
        before_fit()

    return from_pointmap(pm, photo, predictor_version=model_version(predictor), template=template,
                         settings=settings, report=report, cancelled=cancelled, timings=timings)


def predict_animals(predictor, photo: PhotoInput, settings: Settings | None = None,
                    timings: dict | None = None) -> list[dict]:
    """--all-animals, the inference half: one photo map per animal, largest first
    (preprocess.predict_animals with the settings' segmenter); each goes on through
    from_pointmap. timings["inference"] covers every animal's predictor runs."""
    from . import preprocess

    settings = settings or Settings()
    timings = {} if timings is None else timings
    segmenter, note = (None, "") if photo.mask is not None else load_segmenter(settings.segmenter)
    t0 = time.perf_counter()
    maps = preprocess.predict_animals(predictor, photo.rgb, photo.mask, photo.focal_mm, photo.source,
                                      segmenter=segmenter)
    timings["inference"] = time.perf_counter() - t0
    for pm in maps:
        if note:
            pm["segmenter_note"] = note
    return maps


def from_pointmap(pm: dict, photo: PhotoInput, predictor_version: str = "unknown", template=None,
                  settings: Settings | None = None, report=None, cancelled=None,
                  timings: dict | None = None) -> Reconstruction:
    """The part after inference: points, fit and rest positions, from a photo's dual point map
    (preprocess.predict_photo's dict: the crop's map with crop_box, photo_size and focal_mm)."""
    from . import fitting as fit_skeleton
    from . import template as template_mod

    settings = settings or Settings()
    report = report or (lambda stage, fraction: None)
    timings = {} if timings is None else timings
    if settings.character not in ("character", "template", "points"):
        raise DualPMError(f"character: unknown look {settings.character!r}; one of character, template, points")
    if settings.delight not in ("auto", "on", "off"):
        raise DualPMError(f"character: unknown delight {settings.delight!r}; one of auto, on, off")
    template = template or template_mod.load_default()
    report("fit", 0.0)
    t0 = time.perf_counter()
    pts = pointmap.extract_points(pm, settings.occupancy_threshold, settings.confidence_threshold)
    n = len(pts["P"])
    if n < MIN_POINTS:
        raise DualPMError(f"no animal found in {photo.source} (only {n} points pass the occupancy "
                          f"{settings.occupancy_threshold} and confidence {settings.confidence_threshold} thresholds)")
    k_crop = np.asarray(pm["intrinsics"], dtype=np.float64)
    camera_fit = None
    if settings.place_camera:
        from .fit_camera import fit_camera

        # Pixels are exact, a predicted depth may not be: move the cloud (and solve the focal
        # length when the photo did not say it) so that it reprojects onto its pixels.
        uv = pts["pixel"][:, ::-1].astype(np.float64) + 0.5
        focal_known = bool(pm.get("focal_from_exif", False))
        camera_fit = fit_camera(pts["P"], uv, k_crop, solve_focal=not focal_known, seed=settings.seed)
        pts["P"] = camera_fit.apply(pts["P"]).astype(np.float32)
        k_crop = np.asarray(camera_fit.intrinsics, dtype=np.float64)
    # The cloud as observed (after fit_camera), before the photo fit moves it onto the rig: the
    # character's shape solve (character/deform.py) needs the evidence, not the rig's echo of it.
    pts["P_observed"] = np.array(pts["P"], dtype=np.float32)
    pose_weight = fit_skeleton.PREDICTED_POSE_WEIGHT if settings.pose_weight is None else settings.pose_weight
    options = fit_skeleton.FitOptions(surface_pull=settings.surface_pull, pose_weight=pose_weight,
                                      seed=settings.seed, point_weights=True)
    size = pm["P"].shape[1]
    h, w = (int(v) for v in np.asarray(pm.get("photo_size", pm["P"].shape[1:3])))
    box = np.asarray(pm.get("crop_box", (0.0, 0.0, float(w), float(h))), dtype=np.float64)
    photo_mask = pm.get("photo_mask")
    if settings.fit == "photo":
        grid_mask = photo_grid_mask(pm, photo_mask, box, size)
        fit = fit_skeleton.fit_to_photo(pts, k_crop, grid_mask, fit_context(template),
                                        fit_skeleton.PhotoOptions(fit=options),
                                        focal_known=bool(pm.get("focal_from_exif", False)),
                                        seen=photo_grid_seen(box, photo_mask, size))
        k_crop = np.asarray(fit.intrinsics, dtype=np.float64)
        # The cloud goes where the rig says each point is: it then lines up with the photo too.
        # Visible points stay on their own pixel's ray, at the fitted depth.
        placed = fitted_points(fit, pts["Q"], template.skeleton)
        vis = np.asarray(pts["layer"]) == 0
        uv1 = np.concatenate([pts["pixel"][vis][:, ::-1].astype(np.float64) + 0.5, np.ones((int(vis.sum()), 1))], 1)
        rays = uv1 @ np.linalg.inv(k_crop).T
        placed[vis] = rays * placed[vis, 2:3]
        pts["P"] = placed.astype(np.float32)
        m_inv = np.linalg.inv(fit.model_to_camera)
        p_model = np.asarray(pts["P"], dtype=np.float64) @ m_inv[:3, :3].T + m_inv[:3, 3]
        rest = unskin(p_model, fit.rest_skeleton, fit.rotations, fit.point_skin_joints, fit.point_skin_weights)
    elif settings.fit == "points":
        fit = fit_skeleton.fit(pts["P"], pts["Q"], context=fit_context(template), options=options)
        # Rest positions of the points under the fitted pose (model space), for the Armature modifier.
        m_inv = np.linalg.inv(fit.model_to_camera)
        p_model = np.asarray(pts["P"], dtype=np.float64) @ m_inv[:3, :3].T + m_inv[:3, 3]
        rest = unskin(p_model, fit.rest_skeleton, fit.rotations, fit.point_skin_joints, fit.point_skin_weights)
    else:
        raise DualPMError(f"fit: unknown fit {settings.fit!r}; one of photo, points")
    timings["fit"] = time.perf_counter() - t0
    _check(cancelled)

    k_photo = camera.uncrop_intrinsics(k_crop, box, (size, size))
    rig_iou = float("nan")
    if photo_mask is not None:
        from . import metrics

        rig_iou = metrics.rig_iou(fit.posed_vertices, fit.faces, k_photo, np.asarray(photo_mask, dtype=bool))
    character = None
    if settings.character == "character":
        from .character import instance, shape

        t0 = time.perf_counter()
        character_rest = None
        if settings.shape:
            # The animal's own shape: the character deformed toward the cloud and the mask.
            shape_report: dict = {}
            character_rest = shape(fit, template, pts, fit.point_skin_joints, fit.point_skin_weights,
                                   fit.point_valid, photo_mask, k_photo, report=shape_report).vertices
            timings["shape"] = time.perf_counter() - t0
        character = instance.make(fit, template, photo.rgb, photo_mask, k_photo, rest=character_rest,
                                  delight=settings.delight)
        if settings.shape:
            character.figures["shape"] = {k: v for k, v in shape_report.items() if k != "seconds"}
        timings["character"] = time.perf_counter() - t0
    return Reconstruction(
        source=photo.source, path=photo.path, sha256=photo.sha256, photo_size=(h, w),
        photo_intrinsics=k_photo, crop_box=box, points=pts,
        point_rest=rest.astype(np.float32), point_skin_joints=np.asarray(fit.point_skin_joints),
        point_skin_weights=np.asarray(fit.point_skin_weights), point_matched=np.asarray(fit.point_valid, dtype=bool),
        fit=fit, template=template, model_version=predictor_version,
        settings=dict(settings.as_dict(), pose_weight=pose_weight, focal_mm=float(pm.get("focal_mm", 0.0)),
                      focal_from_exif=bool(pm.get("focal_from_exif", False))),
        camera_fit=camera_fit, timings=timings, photo_mask=None if photo_mask is None else np.asarray(photo_mask, bool),
        mask_source=str(pm.get("mask_source", "user" if photo.mask is not None else "")),
        animals_found=int(pm.get("animals_found", 1)), animal_index=int(pm.get("animal_index", 1)), rig_iou=rig_iou,
        segmenter_note=str(pm.get("segmenter_note", "")), character=character)


def photo_grid_mask(pm: dict, photo_mask, box, size: int) -> np.ndarray:
    """The animal's outline in the map's grid: the photo mask cropped as the photo was, else the
    predictor's own layer-0 occupancy (the documented fallback when no mask reached the fit)."""
    if photo_mask is not None:
        from .preprocess import crop_resize_mask

        return crop_resize_mask(np.asarray(photo_mask, dtype=bool), box, size) > 127
    return np.asarray(pm["occupancy"])[0] > pointmap.OCCUPANCY_THRESHOLD


def photo_grid_seen(box, photo_mask, size: int) -> np.ndarray | None:
    """(size, size) bool: the map's grid pixels where the mask is known. A crop box may reach past
    the photo's edges; past an edge that the animal's mask touches, the animal may go on out of
    frame, so the mask knows nothing there (False). Past an edge it does not touch the animal
    has ended inside the photo. None: no photo mask."""
    if photo_mask is None:
        return None
    m = np.asarray(photo_mask, dtype=bool)
    h, w = m.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size
    ys = y0 + (np.arange(size) + 0.5) * (y1 - y0) / size
    cut_x = (xs < 0) & m[:, 0].any() | (xs >= w) & m[:, -1].any()
    cut_y = (ys < 0) & m[0].any() | (ys >= h) & m[-1].any()
    return ~(cut_y[:, None] | cut_x[None, :])


def fitted_points(fit, q: np.ndarray, skeleton) -> np.ndarray:
    """Camera-space positions of the points' Q on the fitted, posed rig: Q carried onto the
    instance's rest shape by each point's skin weights (`skeleton`: the template's, Q's
    reference), then skinned and placed."""
    from .fitting import instance_rest_points
    from .skinning import linear_blend_skinning

    rest = instance_rest_points(skeleton, np.asarray(q, np.float64), fit.point_skin_joints, fit.point_skin_weights,
                                fit.global_scale, fit.bone_scales, thickness=fit.thickness)
    g = fit.rest_skeleton.forward_kinematics(fit.rotations)
    posed = linear_blend_skinning(rest, fit.point_skin_joints, fit.point_skin_weights,
                                  fit.rest_skeleton.skinning_matrices(g))
    m = fit.model_to_camera
    return posed @ m[:3, :3].T + m[:3, 3]


_CACHE: dict = {}
_SEGMENTERS: dict = {}


def load_segmenter(setting: str = "auto"):
    """(segment.Segmenter or None, note). "auto": the shipped model, and when it is missing or
    corrupt no segmenter and the reason as the note (the predictor's own mask is then used, and
    the JSON says so); "off": none; a path: that model, a one-line DualPMError when it fails."""
    from . import segment

    if setting == "off":
        return None, ""
    path = None if setting == "auto" else setting
    key = path or "auto"
    if key not in _SEGMENTERS:
        try:
            _SEGMENTERS[key] = (segment.load(path), "")
        except DualPMError as e:
            if path is not None:
                raise
            _SEGMENTERS[key] = (None, f"segmenter unavailable, the predictor's mask was used: {e}")
    return _SEGMENTERS[key]


def fit_context(template):
    """The fit's per-template context (correspondence index, pose prior), built once (~0.2 s)."""
    from . import fitting as fit_skeleton

    key = id(template)
    if _CACHE.get("key") != key:
        _CACHE.update(key=key, template=template, context=fit_skeleton.prepare(template))
    return _CACHE["context"]


class Job:
    """Run fn(report, cancelled) on a daemon thread; poll() from a UI timer.

    The function's exceptions are kept (with the traceback text, for the console) and re-raised
    by result(). cancel() sets the flag and calls the cancel hooks (the inference client's
    cancel aborts the HTTP request in flight), so Esc never waits for a slow stage to finish.
    """

    def __init__(self, fn, name: str = "dualpm-job"):
        self._fn = fn
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._hooks = []
        self.stage, self.fraction = "queued", 0.0
        self.started = time.perf_counter()
        self._result = None
        self.error: BaseException | None = None
        self.traceback = ""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def _report(self, stage: str, fraction: float) -> None:
        with self._lock:
            self.stage, self.fraction = stage, float(fraction)

    def _run(self):
        try:
            self._result = self._fn(self._report, self._cancel.is_set)
        except BaseException as e:  # noqa: BLE001 - handed to the UI thread, which reports it
            self.error = e
            self.traceback = traceback.format_exc()
        finally:
            self._done.set()

    def add_cancel_hook(self, hook) -> None:
        self._hooks.append(hook)

    def cancel(self) -> None:
        self._cancel.set()
        for hook in self._hooks:
            try:
                hook()
            except Exception:  # a failing hook must not keep the others from running
                pass

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def progress(self) -> tuple[str, float]:
        with self._lock:
            return self.stage, self.fraction

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self):
        if not self.done:
            raise RuntimeError("job still running")
        if self.error is not None:
            raise self.error
        return self._result


def stage_fraction(stage: str, fraction: float) -> float:
    """Overall progress 0..1 from a stage and its own fraction (stages weighted equally)."""
    if stage not in STAGES:
        return 0.0
    return (STAGES.index(stage) + min(max(fraction, 0.0), 1.0)) / len(STAGES)


def file_name(path: str) -> str:
    return os.path.basename(os.fspath(path))
