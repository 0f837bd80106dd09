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
from bpy.props import StringProperty

from . import image_load, preferences, scene_build, session
from ._core import core, error_type, report_error

_active = None  # the running modal operator's job, so the panel can show it and refuse a second
last_result = None  # the latest Reconstruction (its timings feed the benchmark and the tests)


class PhotoRequest:
    """What the main thread gathers before the worker starts."""

    def __init__(self, photo, image, created_images, settings: dict, mask_source: str = "none"):
        self.photo = photo  # pipeline.PhotoInput
        self.image = image  # bpy Image shown as the camera background
        self.created_images = created_images  # images this request loaded (removed if it fails)
        self.settings = settings  # preferences.settings_dict()
        self.mask_source = mask_source  # "file" (mask_path), "image" (the panel's), "alpha" or "none"


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
        rgba = image_load.pixels(image)
        rgb = image_load.to_rgb8(image, rgba)
        mask, mask_source = None, "none"
        mode = mask_mode or (s.mask_mode if s is not None else "NONE")
        if mask_path:
            try:
                mimage, mnew = image_load.load(mask_path)
            except error_type() as e:  # name it a mask: the photo itself was fine
                raise error_type()(f"mask {e}") from None
            try:
                mask = image_load.mask_from_image(mimage, rgb.shape[:2])
            finally:
                if mnew:
                    bpy.data.images.remove(mimage)
            mask_source = "file"
        elif mode in ("ALPHA", "AUTO"):
            mask = image_load.alpha_mask(rgba, mode == "ALPHA", image.name)
            mask_source = "alpha" if mask is not None else "none"
        elif mode == "IMAGE":
            if s is None or s.mask_image is None:
                raise error_type()("mask: choose a mask image in the DualPM panel, or set Mask to None")
            mask = image_load.mask_from_image(s.mask_image, rgb.shape[:2])
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
    return PhotoRequest(photo, image, created, preferences.settings_dict(context), mask_source)


def pipeline_settings(settings: dict):
    return core("pipeline").Settings(occupancy_threshold=float(settings["occupancy_threshold"]),
                                     confidence_threshold=float(settings["confidence_threshold"]))


def run_inference(request: PhotoRequest, report=None, cancelled=None, timings=None, predictor=None,
                  job=None):
    """Worker side: start the backend if needed, then crop, infer and fit (pipeline.reconstruct)."""
    report = report or (lambda stage, fraction: None)
    own = predictor is None  # the session's backend (kept between clicks), not the caller's
    if own:
        predictor = session.backend(request.settings)
    if job is not None:
        job.add_cancel_hook(predictor.cancel)
    report("inference", 0.0)
    t0 = time.perf_counter()
    template = session.template()
    # The fit's template index (~0.2 s, once per session) builds while the server starts.
    warm = threading.Thread(target=core("pipeline").fit_context, args=(template,), daemon=True)
    warm.start()
    try:
        predictor.start()
    except BaseException:
        if own:
            session.discard(predictor)  # the next click starts afresh
        raise
    finally:
        warm.join()
    if timings is not None:
        timings["server_start"] = time.perf_counter() - t0
    return core("pipeline").reconstruct(predictor, request.photo, template=template,
                                        settings=pipeline_settings(request.settings), report=report,
                                        cancelled=cancelled, timings=timings)


def build_scene(context, request: PhotoRequest, rec, point_size: float | None = None,
                set_render_resolution: bool = False) -> dict:
    t0 = time.perf_counter()
    image = request.image
    try:
        image.name  # the user may have deleted it while the worker ran
    except ReferenceError:
        image = None
    s = getattr(context.scene, "dualpm", None)
    size = point_size if point_size is not None else (s.point_size if s is not None else 0.006)
    objects = scene_build.build(context, rec, image=image, point_size=size,
                                set_render_resolution=set_render_resolution)
    rec.timings["import"] = time.perf_counter() - t0
    return objects


def _cleanup(request: PhotoRequest | None):
    if request is None:
        return
    for im in request.created_images:
        try:
            bpy.data.images.remove(im)
        except ReferenceError:
            pass
    request.created_images = []


def _tag_redraw(context):
    screen = getattr(context, "screen", None)
    for area in (screen.areas if screen is not None else []):
        if area.type == "VIEW_3D":
            area.tag_redraw()


class ModalRun:
    """What the modal operator does between events, as plain calls (the tests drive it with a real
    context and a real worker, ticking as the timer would): start the worker, poll it, show the
    stage, and write the scene when it is done; or cancel."""

    def __init__(self, context, filepath: str = "", mask_path: str = ""):
        self.timings = {}
        self.request = gather(context, filepath, mask_path, self.timings)
        self.job = None
        self.result = None

    def start(self, context) -> None:
        global _active
        request, timings = self.request, self.timings
        job = core("pipeline").Job(lambda report, cancelled: run_inference(
            request, report, cancelled, timings, job=job), name="dualpm-reconstruct")
        self.job = job
        _active = job
        wm = context.window_manager
        status = wm.dualpm_status
        status.running, status.stage, status.progress, status.message = True, "inference", 0.0, ""
        wm.progress_begin(0.0, 1.0)
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
        rec = self.job.result()
        self.show(context, "import", 0.0)
        build_scene(context, self.request, rec)
        self.result = rec
        _remember(rec)
        self.end(context)
        return "FINISHED"

    def cancel(self, context) -> None:
        if self.job is not None:
            self.job.cancel()
        self.end(context)
        _cleanup(self.request)

    def show(self, context, stage, fraction, text=None):
        total = core("pipeline").stage_fraction(stage, fraction)
        wm = context.window_manager
        wm.dualpm_status.stage, wm.dualpm_status.progress = stage, total
        wm.progress_update(total)
        label = text or f"DualPM: {stage} ({total * 100:.0f}%), Esc to cancel"
        if context.workspace is not None:
            context.workspace.status_text_set(label)
        _tag_redraw(context)

    def end(self, context):
        global _active
        if _active is self.job:
            _active = None
        wm = context.window_manager
        wm.progress_end()
        wm.dualpm_status.running = False
        wm.dualpm_status.stage = ""
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _tag_redraw(context)


class DUALPM_OT_reconstruct(bpy.types.Operator):
    """Reconstruct a rigged animal from the chosen photo (Esc cancels)"""

    bl_idname = "dualpm.reconstruct"
    bl_label = "Reconstruct from Photo"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                             description="Photo file (default: the one chosen in the panel)")
    mask_path: StringProperty(name="Mask", subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                              description="Mask image file (default: the panel's mask setting)")

    _run = None
    _timer = None

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
            rec = run_inference(request, timings=timings)
            build_scene(context, request, rec)
            _remember(rec)
            self.report({"INFO"}, _done_message(rec))
            return {"FINISHED"}
        except BaseException as e:  # noqa: BLE001 - the operator boundary: one line, never a traceback
            return _fail(self, context, request, e)

    # -- modal (interactive): the worker runs, a timer polls it, Esc cancels -----------------------
    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._run = ModalRun(context, self.filepath, self.mask_path)
            self._run.start(context)
        except BaseException as e:  # noqa: BLE001
            return _fail(self, context, self._run.request if self._run else None, e)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._stop_timer(context)
            self._run.cancel(context)
            self.report({"WARNING"}, "Reconstruction cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            state = self._run.tick(context)
        except BaseException as e:  # noqa: BLE001
            self._stop_timer(context)
            self._run.end(context)
            return _fail(self, context, self._run.request, e)
        if state != "FINISHED":
            return {"PASS_THROUGH"}
        self._stop_timer(context)
        self.report({"INFO"}, _done_message(self._run.result))
        return {"FINISHED"}

    def _stop_timer(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


def _fail(op, context, request, e):
    cancelled = isinstance(e, (core("pipeline").Cancelled, KeyboardInterrupt)) or \
        type(e).__name__ == "InferenceCancelled"
    _cleanup(request)
    if cancelled:
        op.report({"WARNING"}, "Reconstruction cancelled")
        return {"CANCELLED"}
    context.window_manager.dualpm_status.message = report_error(op, e, "during Reconstruct from Photo")
    return {"CANCELLED"}


def _remember(rec) -> None:
    global last_result
    last_result = rec


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
