"""Reconstruct from photo: the panel's main button.

io_scene_gltf2's split: the operator gathers inputs (a photo decoded by Blender, a mask, the
preferences), the core (dualpm_addon.pipeline) does all the math, and scene_build writes the
result into a new collection.

Interactive runs are modal: the photo is decoded on the main thread (bpy is not thread-safe),
inference and the fit run on a worker thread (pipeline.Job), and a 0.1 s timer polls it, drives
the progress bar, the status bar text and the panel; Esc cancels (the client aborts the HTTP
request in flight). The scene is written only in the final modal step, so the one undo step that
Blender pushes when the operator finishes holds the whole result. In background mode (no event
loop, no timers) invoke falls through to execute(), which does the same work synchronously; the
batch command uses the same functions.

Every failure reaches the user as one line (self.report ERROR): DualPMError's message, or for an
unexpected exception its type and message, with the traceback printed to the console only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import bpy
import numpy as np
from bpy.props import StringProperty

from . import animation, image_load, modal, preferences, scene_build, session
from ._core import core, error_type, report_error

_active = None  # the running modal operator's job, so the panel can show it and refuse a second
last_result = None  # the latest Reconstruction (its timings feed the benchmark and the tests)
last_results = []  # every animal's of the latest run ("All Animals"), largest first


class PhotoRequest:
    """What the main thread gathers before the worker starts."""

    def __init__(self, photo, image, created_images, settings: dict, mask_source: str = "none",
                 all_animals: bool = False):
        self.photo = photo  # pipeline.PhotoInput
        self.image = image  # bpy Image shown as the camera background
        self.created_images = created_images  # images this request loaded (removed if it fails)
        self.settings = settings  # preferences.settings_dict(), plus "fit" ("photo" or "points")
        self.mask_source = mask_source  # "file" (mask_path), "image" (the panel's), "alpha" or "none"
        self.all_animals = all_animals  # one reconstruction per animal found, not only the largest
        self.animal_errors = []  # (animal index, DualPMError) of animals left out by run_inference_all
        self.intake = {}  # NAME.json's "intake": EXIF orientation applied, the upright size, the factor

    @property
    def display(self) -> tuple:
        """(factor, (H, W)): the camera background's pixels shrunk by factor are the working photo
        (intake.py), and the camera is made for the background's size. A photo turned upright has
        the working photo itself as its background."""
        i = self.intake
        if not i or i["exif_orientation"] != 1:
            return 1, tuple(self.photo.rgb.shape[:2])
        w, h = i["upright_size"]
        return int(i["work_factor"]), (int(h), int(w))


def gather(context, filepath: str = "", mask_path: str = "", timings: dict | None = None,
           mask_mode: str | None = None) -> PhotoRequest:
    """Decode the photo (and mask) through bpy; DualPMError on anything the user must fix.

    The mask: `mask_path` when given; else `mask_mode` ("NONE", "ALPHA", "IMAGE" as the panel's
    setting, or "AUTO": the photo's alpha where it marks something out, else none; the batch
    command's choice, dualpm_addon/masks.py), which defaults to the panel's setting."""
    pipeline = core("pipeline")
    t0 = time.perf_counter()
    s = getattr(context.scene, "dualpm", None)
    created = []
    try:
        if filepath:
            image, new = image_load.load(filepath)
            path = image_load.image_file_path(image) or filepath
        elif s is not None and s.source == "IMAGE":
            image = s.photo_image
            if image is None:
                raise error_type()("no photo chosen: pick an image in the DualPM panel")
            new = False
            path = image_load.image_file_path(image)
        else:
            path = s.photo_path if s is not None else ""
            if not path:
                raise error_type()("no photo chosen: pick a photo file in the DualPM panel")
            path = bpy.path.abspath(path)
            image, new = image_load.load(path)
        if new:
            created.append(image)
        # Upright (EXIF orientation) and at most intake.WORK_MAX_SIDE a side (dualpm_addon/intake.py).
        # Both readers of the file answer "upright" and "no fast path" where there is no file.
        intake = core("intake")
        orientation = intake.exif_orientation(path)
        full = intake.upright_shape(tuple(image.size)[::-1], orientation)
        factor = intake.work_factor(*full)
        fast = intake.shrunk_jpeg(path, factor)
        if fast is not None:  # a large JPEG, decoded small by libjpeg (no alpha channel)
            rgb, factor = np.ascontiguousarray(intake.orient(fast[0], orientation)), fast[1]
            rgba = None
        else:
            rgba = intake.shrink(intake.orient(image_load.pixels(image), orientation), factor)
            rgb = image_load.to_rgb8(image, rgba)
        if orientation != 1:
            # Blender shows the stored pixels: the camera's background is the upright photo.
            upright = image_load.new_image(f"{image.name} upright", rgb)
            created.append(upright)
            if new:
                created.remove(image)
                bpy.data.images.remove(image)
            image = upright
        mask, mask_source = None, "none"
        mode = mask_mode or (s.mask_mode if s is not None else "NONE")
        if mask_path:
            try:
                mimage, mnew = image_load.load(mask_path)
            except error_type() as e:  # name it a mask: the photo itself was fine
                raise error_type()(f"mask {e}") from None
            try:
                mask = image_load.mask_from_image(mimage, full, factor, _orientation_of(mimage, mask_path))
            finally:
                if mnew:
                    bpy.data.images.remove(mimage)
            mask_source = "file"
        elif mode in ("ALPHA", "AUTO"):
            mask = image_load.alpha_mask(rgba, mode == "ALPHA", image.name)  # rgba None: opaque
            mask_source = "alpha" if mask is not None else "none"
        elif mode == "IMAGE":
            if s is None or s.mask_image is None:
                raise error_type()("mask: choose a mask image in the DualPM panel, or set Mask to None")
            mask = image_load.mask_from_image(s.mask_image, full, factor, _orientation_of(s.mask_image))
            mask_source = "image"
        has_file = bool(path) and os.path.isfile(path)
        sha = pipeline.sha256_file(path) if has_file else hashlib.sha256(rgb.tobytes()).hexdigest()
        photo = pipeline.PhotoInput(rgb=rgb, mask=mask, focal_mm=image_load.exif_focal_mm(path) if has_file else None,
                                    source=os.path.basename(path) if path else image.name, path=path, sha256=sha)
    except BaseException:
        for im in created:
            bpy.data.images.remove(im)
        raise
    if timings is not None:
        timings["load"] = time.perf_counter() - t0
    settings = preferences.settings_dict(context)
    settings["character"] = str(getattr(s, "character", "CHARACTER")).lower()
    settings["delight"] = str(getattr(s, "delight", "AUTO")).lower()
    settings["motion"] = str(getattr(s, "motion", "IDLE")).lower()
    request = PhotoRequest(photo, image, created, settings, mask_source,
                           all_animals=bool(getattr(s, "all_animals", False)))
    request.intake = {"exif_orientation": int(orientation), "upright_size": [int(full[1]), int(full[0])],
                      "work_factor": int(factor)}
    return request


def _orientation_of(image, path: str = "") -> int:
    """A mask image's own EXIF orientation (a mask saved by a phone app is stored as its photo)."""
    return core("intake").exif_orientation(path or image_load.image_file_path(image))


def pipeline_settings(settings: dict):
    return core("pipeline").Settings(occupancy_threshold=float(settings["occupancy_threshold"]),
                                     confidence_threshold=float(settings["confidence_threshold"]),
                                     fit=str(settings.get("fit", "photo")),
                                     character=str(settings.get("character", "character")),
                                     delight=str(settings.get("delight", "auto")))


def run_inference(request: PhotoRequest, report=None, cancelled=None, timings=None, predictor=None,
                  job=None):
    """Worker side: start the backend if needed, then crop, infer and fit (pipeline.reconstruct)."""
    report = report or (lambda stage, fraction: None)
    predictor, warm = start_backend(request, report, timings, predictor, job)
    try:
        return core("pipeline").reconstruct(predictor, request.photo, template=session.template(),
                                            settings=pipeline_settings(request.settings), report=report,
                                            cancelled=cancelled, timings=timings, before_fit=warm.join)
    finally:
        warm.join()


def run_inference_all(request: PhotoRequest, report=None, cancelled=None, timings=None, predictor=None,
                      job=None) -> list:
    """Worker side of "All Animals": one Reconstruction per animal, largest first
    (pipeline.predict_animals, then pipeline.from_pointmap each). An animal whose fit fails is
    left out, its error kept in request.animal_errors; when every one fails, the first error is
    raised. Each result's timings hold the shared stages (load, inference of all animals) and
    its own fit."""
    pipeline = core("pipeline")
    report = report or (lambda stage, fraction: None)
    timings = {} if timings is None else timings
    predictor, warm = start_backend(request, report, timings, predictor, job)
    settings = pipeline_settings(request.settings)
    try:
        maps = pipeline.predict_animals(predictor, request.photo, settings, timings)
    finally:
        warm.join()
    recs, request.animal_errors = [], []
    for pm in maps:
        try:
            recs.append(pipeline.from_pointmap(pm, request.photo, pipeline.model_version(predictor),
                                               template=session.template(), settings=settings, report=report,
                                               cancelled=cancelled, timings=dict(timings)))
        except error_type() as e:
            request.animal_errors.append((int(pm.get("animal_index", len(recs) + 1)), e))
    if not recs:
        raise request.animal_errors[0][1]
    return recs


def start_backend(request: PhotoRequest, report, timings=None, predictor=None, job=None):
    """(predictor, warm): the predictor, started (the session's backend unless the caller brings
    one), and the thread that builds what the fit and the character need from the template
    (~0.2 s each, once per session) meanwhile; it goes on beside the segmenter and the predictor's
    runs, so join it before the fit."""
    own = predictor is None  # the session's backend (kept between clicks), not the caller's
    if own:
        predictor = session.backend(request.settings)
    if job is not None:
        job.add_cancel_hook(predictor.cancel)
    report("inference", 0.0)
    t0 = time.perf_counter()
    template = session.template()
    # Modules are imported here, on the main thread: the thread only computes. That includes the
    # segmenter's onnxruntime.
    character = (core("character"), core("character.instance"), core("character.operators")) \
        if request.settings.get("character", "character") == "character" else None
    # The shape solve's operators (0.3 s) join the warm-up in batch runs (no job), where they then
    # overlap inference instead of delaying the shape solve; a click keeps the thread short, so the
    # UI's timer ticks share the two cores with less (the worker builds them when it needs them).
    solver = job is None
    segmenting = request.photo.mask is None
    if segmenting:
        core("segment").import_runtime()
    warm = threading.Thread(target=_warm, args=(template, character, solver), daemon=True)
    warm.start()
    try:
        predictor.start()
    except BaseException:
        warm.join()
        if own:
            session.discard(predictor)  # the next click starts afresh
        raise
    if segmenting:
        # Its session (cached for the inference to come) is made once the server is up and idle:
        # its thread count follows the cores free now (the warm-up's counts as busy: it runs on
        # beside the segmenter, and two ORT threads sharing a core with it wait for each other).
        try:
            core("pipeline").load_segmenter(pipeline_settings(request.settings).segmenter)
        except BaseException:
            warm.join()
            raise
    if timings is not None:
        timings["server_start"] = time.perf_counter() - t0
    return predictor, warm


def _warm(template, character, solver: bool = True) -> None:
    """What the fit and the character (`character`: its package, instance and operators modules,
    or None; `solver`: its shape solve's operators too) need from the template alone, built once
    per session."""
    core("pipeline").fit_context(template)
    if character is not None:
        character[1].texels(character[0].load_character(template))
        if solver:
            character[2].solver(template)


def build_scene(context, request: PhotoRequest, rec, point_size: float | None = None,
                set_render_resolution: bool = False, name: str | None = None) -> dict:
    t0 = time.perf_counter()
    image = request.image
    try:
        image.name  # the user may have deleted it while the worker ran
    except ReferenceError:
        image = None
    s = getattr(context.scene, "dualpm", None)
    size = point_size if point_size is not None else (s.point_size if s is not None else 0.006)
    objects = scene_build.build(context, rec, image=image, name=name, point_size=size,
                                set_render_resolution=set_render_resolution, display=request.display)
    objects["motion"] = animation.write_motion(context, objects["armature"], rec,
                                               request.settings.get("motion", core("idle").DEFAULT),
                                               set_scene_range=set_render_resolution)
    rec.timings["import"] = time.perf_counter() - t0
    return objects


def build_scenes(context, request: PhotoRequest, recs: list) -> list[dict]:
    """One collection per animal ("DualPM NAME animal 2" for the second largest; a single result
    keeps the plain name), each with its own camera: each animal's fit solves its own focal length
    and distance."""
    stem = os.path.splitext(request.photo.source)[0] or "photo"
    several = len(recs) > 1 or bool(request.animal_errors)
    objects = [build_scene(context, request, rec, name=f"{stem} animal {rec.animal_index}" if several else None)
               for rec in recs]
    return objects


def _run_job(request: PhotoRequest, report=None, cancelled=None, timings=None, job=None) -> list:
    """The worker's work as a list of results: every animal, or the largest only."""
    if request.all_animals:
        return run_inference_all(request, report, cancelled, timings, job=job)
    return [run_inference(request, report, cancelled, timings, job=job)]


def _cleanup(request: PhotoRequest | None):
    if request is None:
        return
    for im in request.created_images:
        try:
            bpy.data.images.remove(im)
        except ReferenceError:
            pass
    request.created_images = []


class ModalRun:
    """What the modal operator does between events, as plain calls (the tests drive it with a real
    context and a real worker, ticking as the timer would): start the worker, poll it, show the
    stage, and write the scene when it is done; or cancel."""

    def __init__(self, context, filepath: str = "", mask_path: str = ""):
        self.timings = {}
        self.request = gather(context, filepath, mask_path, self.timings)
        self.job = None
        self.result = None  # the largest animal's Reconstruction
        self.results = []  # every animal's, with "All Animals"

    def start(self, context) -> None:
        global _active
        request, timings = self.request, self.timings
        job = core("pipeline").Job(lambda report, cancelled: _run_job(
            request, report, cancelled, timings, job=job), name="dualpm-reconstruct")
        self.job = job
        _active = job
        modal.status_begin(context, "inference")
        job.start()
        self.show(context, "inference", 0.0)

    def tick(self, context) -> str:
        """'RUNNING' while the worker works (returns at once), 'WAITING' when the result is ready
        but the user is in another mode, 'FINISHED' once the scene is written; raises what the
        worker raised (the caller reports it)."""
        if not self.job.done:
            stage, fraction = self.job.progress()
            self.show(context, stage, fraction)
            return "RUNNING"
        if context.mode != "OBJECT":
            self.show(context, "import", 0.0, "DualPM: result ready, back to Object Mode to add it")
            return "WAITING"
        recs = self.job.result()
        self.show(context, "import", 0.0)
        build_scenes(context, self.request, recs)
        self.result = recs[0]
        self.results = recs
        _remember(recs)
        self.end(context)
        return "FINISHED"

    def cancel(self, context) -> None:
        if self.job is not None:
            self.job.cancel()
        self.end(context)
        _cleanup(self.request)

    def show(self, context, stage, fraction, text=None):
        total = core("pipeline").stage_fraction(stage, fraction)
        modal.status_show(context, stage, total, text or f"DualPM: {stage} ({total * 100:.0f}%), Esc to cancel")

    def end(self, context):
        global _active
        if _active is self.job:
            _active = None
        modal.status_end(context)


class DUALPM_OT_reconstruct(modal.ModalOperator, bpy.types.Operator):
    """Reconstruct a rigged animal from the chosen photo (Esc cancels)"""

    bl_idname = "dualpm.reconstruct"
    bl_label = "Reconstruct from Photo"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                             description="Photo file (default: the one chosen in the panel)")
    mask_path: StringProperty(name="Mask", subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                              description="Mask image file (default: the panel's mask setting)")

    @classmethod
    def poll(cls, context):
        if _active is not None:
            cls.poll_message_set("A reconstruction is already running")
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    # -- synchronous (background mode, redo, scripts) -------------------------------------------
    def execute(self, context):
        request = None
        try:
            timings = {}
            request = gather(context, self.filepath, self.mask_path, timings)
            recs = _run_job(request, timings=timings)
            build_scenes(context, request, recs)
            _remember(recs)
            _report_done(self, request, recs)
            return {"FINISHED"}
        except BaseException as e:  # noqa: BLE001 - the operator boundary: one line, never a traceback
            return _fail(self, context, request, e)

    # -- modal (interactive): the worker runs, a timer polls it, Esc cancels (modal.ModalOperator)
    cancel_message = "Reconstruction cancelled"

    def make_run(self, context):
        return ModalRun(context, self.filepath, self.mask_path)

    def failed(self, context, error) -> set:
        return _fail(self, context, getattr(self._run, "request", None), error)

    def finished(self, context) -> None:
        _report_done(self, self._run.request, self._run.results)


def _fail(op, context, request, e):
    cancelled = isinstance(e, (core("pipeline").Cancelled, KeyboardInterrupt)) or \
        type(e).__name__ == "InferenceCancelled"
    _cleanup(request)
    if cancelled:
        op.report({"WARNING"}, "Reconstruction cancelled")
        return {"CANCELLED"}
    context.window_manager.dualpm_status.message = report_error(op, e, "during Reconstruct from Photo")
    return {"CANCELLED"}


def _remember(recs: list) -> None:
    global last_result, last_results
    last_result, last_results = recs[0], list(recs)


def _report_done(op, request: PhotoRequest, recs: list) -> None:
    turned = core("intake").describe(request.intake)  # "turned upright (EXIF orientation 6)", ...
    op.report({"INFO"}, (_done_message(recs[0]) if len(recs) == 1 and not request.animal_errors else
                         f"DualPM: {len(recs)} animals of {recs[0].animals_found} found; the largest: "
                         f"{_done_message(recs[0])}") + (f"; the photo was {turned}" if turned else ""))
    for index, e in request.animal_errors:
        op.report({"WARNING"}, f"DualPM: animal {index} left out: {e}")


def _done_message(rec) -> str:
    t = rec.timings
    parts = ", ".join(f"{k} {t[k]:.2f} s" for k in ("load", "inference", "fit", "import") if k in t)
    return f"DualPM: {rec.num_points} points, {len(rec.fit.joint_names)} bones ({parts})"


classes = (DUALPM_OT_reconstruct,)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()


def unregister():
    global _active
    if _active is not None:
        _active.cancel()
        _active = None
    _unregister_classes()
