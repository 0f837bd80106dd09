"""Animate from video: the panel's second button, and the clip's scene.

The operator gathers the video path and range from the panel, decodes and fits on a worker
thread (pipeline.Job: dualpm_addon.video.decode, then video.animate: batched inference and the
clip fit), and a 0.1 s timer polls it, shows the stage and the frame (progress per frame), and
writes the scene in its last step; Esc cancels. In background mode (no timers) invoke falls
through to execute(), which does the same synchronously, as Reconstruct from Photo does. One-line
errors (report_error) for everything.

build_clip_scene writes a NEW collection: the camera (fixed where it stood in the first frame,
its focal length keyed where it changes), the rig fitted once to the whole clip with its action
over the clip's frames (the root carrying the placement, video/motion.py), the skinned surface,
and the video as the camera's background (an image of source MOVIE, frame k of the scene showing
the clip's frame k). The scene's frame range and rate become the clip's.
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from bpy.props import FloatProperty, StringProperty

from . import animation, camera_frame, modal, rig, scene_build, session, surface
from . import provenance as prov_mod
from ._core import core, report_error

_active = None  # the running modal operator's job
last_result = None  # the latest video.animate.Animation (tests and the benchmark read it)


def provenance(result, path: str) -> dict:
    from ._core import package

    return {"dualpm_version": package().__version__, "model_version": result.model_version,
            "input_file": os.path.abspath(path), "input_sha256": "",
            "parameters": {"fps": float(result.clip.fps), "frames": len(result.clip),
                           "start_s": float(result.clip.times[0]), "source": "video"}}


def _key_camera(cam_data, ks: np.ndarray, width: int, height: int, frame_start: int) -> bool:
    """Key lens and shift per frame where the intrinsics change over the clip (a zoom)."""
    ks = np.asarray(ks, np.float64)
    if np.allclose(ks, ks[0], rtol=1e-6, atol=1e-6):
        return False
    for t, k in enumerate(ks):
        for key, value in camera_frame.camera_settings(k, width, height).items():
            if key in ("lens", "shift_x", "shift_y"):
                setattr(cam_data, key, value)
                cam_data.keyframe_insert(key, frame=frame_start + t)
    return True


def load_background(path: str, frames: int, offset: int = 0, relative_to: str | None = None):
    """The video as a Blender image of source MOVIE (frames `offset`+1.. on scene frames 1..)."""
    image = bpy.data.images.load(os.path.abspath(path), check_existing=False)
    image.source = "MOVIE"
    if relative_to:
        image.filepath = "//" + os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(relative_to)))
    return image, {"frame_duration": int(frames), "frame_offset": int(offset), "frame_start": 1}


def build_clip_scene(context, result, name: str, background=None, background_user: dict | None = None,
                     provenance_: dict | None = None, set_render: bool = True) -> dict:
    """The clip's collection (module docstring); all or nothing, like scene_build.build."""
    kinds = ("objects", "meshes", "armatures", "cameras", "materials", "actions", "collections")
    before = {kind: set(getattr(bpy.data, kind)) for kind in kinds}
    try:
        return _build(context, result, name, background, background_user or {}, provenance_ or {}, set_render)
    except BaseException:
        if context.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        for kind in kinds:
            coll = getattr(bpy.data, kind)
            for block in [b for b in coll if b not in before[kind]]:
                coll.remove(block)
        raise


def _build(context, result, name, background, background_user, prov, set_render) -> dict:
    fit, motion, clip = result.fit, result.motion, result.clip
    h, w = (int(v) for v in clip.size)
    scene = context.scene
    col = scene_build.new_collection(context, f"{scene_build.COLLECTION_PREFIX} {name}")
    col["dualpm_source"] = "video"
    cam = scene_build.add_camera(f"{name} Camera", col, fit.intrinsics[0], w, h, motion.world_from_cv, None)
    if background is not None:
        cam.data.show_background_images = True
        bg = cam.data.background_images.new()
        bg.source = "IMAGE"
        bg.image = background
        for key, value in background_user.items():
            setattr(bg.image_user, key, value)
        bg.image_user.use_auto_refresh = True
        bg.frame_method = "FIT"
        bg.alpha = 1.0
        bg.display_depth = "BACK"
    zoom_keyed = _key_camera(cam.data, fit.intrinsics, w, h, 1)
    prov_mod.tag(cam, prov, "camera")

    sk = fit.rest_skeleton
    arm = rig.new_armature(context, f"{name} Rig", sk, col)
    action = animation.write_bone_action(arm, list(sk.joint_names), motion.rotations,
                                         root_translation=motion.root_translation,
                                         root_rest_frame=np.asarray(sk.rest_frames[0]), frame_start=1,
                                         name=f"{name} motion")
    prov_mod.tag(arm, prov, "armature")
    arm.data["dualpm_tracked"] = [int(v) for v in np.asarray(fit.tracked)]
    arm.data["dualpm_bridged"] = [int(v) for v in np.asarray(fit.bridged)]

    tpl = session.template()
    smesh = surface.new_surface_mesh(f"{name} Surface", fit.rest_vertices, fit.faces, tpl.face_material,
                                     tpl.material_names, tpl.material_colors)
    sobj = bpy.data.objects.new(f"{name} Surface", smesh)
    col.objects.link(sobj)
    rig.assign_skin(sobj, list(sk.joint_names), fit.skin_joints, fit.skin_weights)
    rig.bind_to_armature(sobj, arm)
    prov_mod.tag(sobj, prov, "surface")

    n = motion.num_frames
    scene.frame_start, scene.frame_end = 1, n
    fps = float(motion.fps)
    scene.render.fps = max(1, int(round(fps)))
    scene.render.fps_base = scene.render.fps / fps
    if set_render:
        scale = 1.0 / clip.scale
        scene.render.resolution_x = int(round(w * scale))
        scene.render.resolution_y = int(round(h * scale))
        scene.render.resolution_percentage = 100
        scene.camera = cam
    scene.frame_set(1)
    arm.select_set(True)
    context.view_layer.objects.active = arm
    return {"collection": col, "camera": cam, "armature": arm, "surface": sobj, "action": action,
            "zoom_keyed": zoom_keyed}


def action_joint_positions(context, arm_obj, joint_names, frames: int, frame_start: int = 1) -> np.ndarray:
    """(T, J, 3) world positions of the bones' heads, evaluated by Blender frame by frame."""
    scene = context.scene
    out = np.zeros((frames, len(joint_names), 3))
    mw = np.array(arm_obj.matrix_world)
    for t in range(frames):
        scene.frame_set(frame_start + t)
        heads = np.array([list(arm_obj.pose.bones[n].head) for n in joint_names])
        out[t] = heads @ mw[:3, :3].T + mw[:3, 3]
    return out


# -- the operator ----------------------------------------------------------------------------------


def gather(context, filepath: str = "", start: float = -1.0, end: float = -1.0) -> dict:
    """The video and its range from the operator or the panel; a one-line error when none is set."""
    s = getattr(context.scene, "dualpm", None)
    path = filepath or (getattr(s, "video_path", "") if s is not None else "")
    if not path:
        raise core("errors").DualPMError("no video chosen: pick a video file or image folder in the DualPM panel")
    path = bpy.path.abspath(path)
    if start < 0 and s is not None:
        start = float(getattr(s, "video_start", 0.0))
    if end < 0 and s is not None:
        end = float(getattr(s, "video_end", 0.0))
    from . import preferences

    return {"path": path, "start": start if start and start > 0 else None,
            "end": end if end and end > 0 else None, "settings": preferences.settings_dict(context)}


def run_worker(request: dict, report=None, cancelled=None, predictor=None, job=None):
    """Worker side: decode, infer, fit (no bpy)."""
    decode = core("video.decode")
    report = report or (lambda stage, fraction: None)
    report("decode", 0.0)
    clip = decode.read(request["path"], request["start"], request["end"], report=lambda f: report("decode", f),
                       cancelled=cancelled)
    request["frames"] = len(clip)  # the UI's "frame i of T"
    own = predictor is None
    if own:
        predictor = session.backend(request["settings"])
    if job is not None and hasattr(predictor, "cancel"):
        job.add_cancel_hook(predictor.cancel)
    try:
        predictor.start()
    except BaseException:
        if own:
            session.discard(predictor)  # the next click starts afresh
        raise
    return core("video.animate").animate(predictor, clip, template=session.template(), report=report,
                                         cancelled=cancelled)


def background_for(result) -> tuple:
    """The camera background in the UI: the original file (a video, its first frame offset), or
    None for an image sequence (Blender plays those only as numbered files, not any folder)."""
    clip = result.clip
    if clip.kind != "video":
        return None, {}
    consecutive = len(clip.numbers) < 2 or np.all(np.diff(clip.numbers) == 1)
    if not consecutive:
        return None, {}  # resampled: scene frames no longer match the file's frames
    if getattr(clip, "rotation", 0):
        return None, {}  # a phone's portrait video: Blender would show its frames as stored, sideways
    image, user = load_background(clip.path, len(clip), int(clip.numbers[0]) - 1)
    return image, user


def build_from_result(context, result, request) -> dict:
    name = _name(request["path"])
    image, user = background_for(result)
    try:
        return build_clip_scene(context, result, name, image, user, provenance(result, request["path"]),
                                set_render=False)
    except BaseException:
        if image is not None:
            bpy.data.images.remove(image)
        raise


def _name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    stem = os.path.splitext(base)[0].replace("%", "") or "video"
    return stem


def _done_message(result) -> str:
    fit = result.fit
    t = result.timings
    return (f"DualPM: {len(result.clip)} frames, {int(fit.tracked.sum())} tracked, {int(fit.bridged.sum())} "
            f"bridged (inference {t.get('inference', 0):.1f} s, fit {t.get('fit', 0):.1f} s)")


class VideoRun:
    """The modal steps as plain calls (start, tick, cancel), as reconstruct.ModalRun."""

    def __init__(self, context, filepath: str = "", start: float = -1.0, end: float = -1.0):
        self.request = gather(context, filepath, start, end)
        self.job = None
        self.result = None

    def start(self, context) -> None:
        global _active
        request = self.request
        job = core("pipeline").Job(lambda report, cancelled: run_worker(request, report, cancelled, job=job),
                                   name="dualpm-animate")
        self.job = job
        _active = job
        modal.status_begin(context, "decode")
        job.start()
        self.show(context, "decode", 0.0)

    def tick(self, context) -> str:
        if not self.job.done:
            stage, fraction = self.job.progress()
            self.show(context, stage, fraction)
            return "RUNNING"
        if context.mode != "OBJECT":
            self.show(context, "scene", 1.0, "DualPM: animation ready, back to Object Mode to add it")
            return "WAITING"
        result = self.job.result()
        build_from_result(context, result, self.request)
        self.result = result
        _remember(result)
        self.end(context)
        return "FINISHED"

    def cancel(self, context) -> None:
        if self.job is not None:
            self.job.cancel()
        self.end(context)

    def show(self, context, stage, fraction, text=None):
        stages = ("decode", "inference", "observe", "shape", "track", "smooth")
        i = stages.index(stage) if stage in stages else len(stages) - 1
        total = (i + min(max(fraction, 0.0), 1.0)) / len(stages)
        frames = int(self.request.get("frames", 0))
        where = f"frame {int(round(fraction * frames))} of {frames}" if frames and stage != "decode" else \
            f"{fraction * 100:.0f}%"
        modal.status_show(context, stage, total, text or f"DualPM: {stage}, {where}, Esc to cancel")

    def end(self, context):
        global _active
        if _active is self.job:
            _active = None
        modal.status_end(context)


class DUALPM_OT_animate_video(modal.ModalOperator, bpy.types.Operator):
    """Fit the rig to a video of an animal and animate it with the animal's motion (Esc cancels)"""

    bl_idname = "dualpm.animate_video"
    bl_label = "Animate from Video"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Video", subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                             description="Video file or image folder (default: the one chosen in the panel)")
    start: FloatProperty(name="Start", default=-1.0, options={"SKIP_SAVE", "HIDDEN"},
                         description="First second of the clip (negative: the panel's)")
    end: FloatProperty(name="End", default=-1.0, options={"SKIP_SAVE", "HIDDEN"},
                       description="Last second of the clip (negative: the panel's; 0: the end)")

    @classmethod
    def poll(cls, context):
        from . import reconstruct

        if _active is not None or reconstruct._active is not None:
            cls.poll_message_set("A reconstruction is already running")
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        return True

    def execute(self, context):
        try:
            request = gather(context, self.filepath, self.start, self.end)
            result = run_worker(request)
            build_from_result(context, result, request)
            _remember(result)
            self.report({"INFO"}, _done_message(result))
            return {"FINISHED"}
        except BaseException as e:  # noqa: BLE001 - the operator boundary: one line, never a traceback
            return _fail(self, context, e)

    # -- modal (interactive): modal.ModalOperator polls the worker, Esc cancels
    cancel_message = "Animate from video cancelled"

    def make_run(self, context):
        return VideoRun(context, self.filepath, self.start, self.end)

    def failed(self, context, error) -> set:
        return _fail(self, context, error)

    def finished(self, context) -> None:
        self.report({"INFO"}, _done_message(self._run.result))


def _fail(op, context, e):
    cancelled = isinstance(e, (core("pipeline").Cancelled, KeyboardInterrupt)) or \
        type(e).__name__ == "InferenceCancelled"
    if cancelled:
        op.report({"WARNING"}, "Animate from video cancelled")
        return {"CANCELLED"}
    context.window_manager.dualpm_status.message = report_error(op, e, "during Animate from Video")
    return {"CANCELLED"}


def _remember(result) -> None:
    global last_result
    last_result = result


classes = (DUALPM_OT_animate_video,)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()


def unregister():
    global _active
    if _active is not None:
        _active.cancel()
        _active = None
    _unregister_classes()
