"""From a decoded clip to the animal's motion: batched inference, the clip fit, the world motion.

    result = animate(predictor, clip, masks)     # clip: decode.Clip

Shared by `dualpm animate` (operators/animate_headless.py) and the "Animate from video" button
(operators/video.py), which only gather inputs and write the scene and the files. No bpy here.
Stages reported as report(stage, fraction): "inference" per frame, then the fit's own stages
("observe", "shape", "track", "smooth").
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..errors import DualPMError


@dataclass
class Animation:
    clip: object  # decode.Clip
    fit: object  # fit.ClipFit
    motion: object  # motion.WorldMotion
    maps: list  # predict_photo's dict per frame, None where no animal was found
    reasons: list  # why a frame has no map ("" where it has one)
    mask_paths: list  # the mask file each frame used (None: the predictor's own)
    inference: dict  # predictor runs, crops, seconds
    timings: dict = field(default_factory=dict)
    model_version: str = "unknown"

    def summary(self) -> dict:
        """NAME.json's figures (the command adds its outputs and total times)."""
        clip, fit = self.clip, self.fit
        fd = fit.to_dict()
        per_frame = fd.pop("per_frame")
        for t, row in enumerate(per_frame):
            pm = self.maps[t]
            row.update({"source_time_s": round(float(clip.times[t]), 6), "source_frame": int(clip.numbers[t]),
                        "animal_found": pm is not None,
                        "crop_box": None if pm is None else [round(float(v), 2) for v in pm["crop_box"]],
                        "mask": None if self.mask_paths[t] is None else os.path.abspath(self.mask_paths[t])})
            if pm is None:
                row["reason"] = self.reasons[t]
        return {"status": "ok", "model_version": self.model_version, "video": clip.summary(),
                "fit": fd, "inference": dict(self.inference),
                "frames_with_animal": int(sum(m is not None for m in self.maps)), "per_frame": per_frame}


def animate(predictor, clip, masks=None, mask_paths=None, template=None, options=None, report=None,
            cancelled=None, segmenter=None, fit_process: bool | None = None, meanwhile=None) -> Animation:
    """Every frame through the predictor (video.infer.predict_frames, batched), then fit_clip
    and the motion in the first frame's world (video.motion). A clip in which no frame shows an
    animal is a one-line DualPMError naming the first frame's reason. `segmenter`
    (segment.Segmenter) gives unmasked frames the segmenter's outline, as a photo gets: better
    masks, about 0.3 s more a frame on two cores, and no tracked crops.

    fit_process: the fit in a forked process fed while inference runs (video/fit_process.py: the
    same result, on a core of its own); None: wherever that is safe (fit_process.available),
    else on a thread. meanwhile(): the caller's work that needs no fit (the command writes the
    clip's video and loads Blender), run while the fit process fits, or before the fit."""
    from ..pipeline import model_version
    from ..template import load_default
    from . import fit_process as fp
    from . import infer, motion
    from .fit import ClipOptions, FrameObserver, fit_clip

    report = report or (lambda stage, fraction: None)
    timings: dict = {}
    t0 = time.perf_counter()
    start = getattr(predictor, "start", None)
    if start is not None:
        start()
    timings["predictor_start"] = time.perf_counter() - t0
    template = template or load_default()
    n = len(clip)
    if options is None:
        options = ClipOptions(fps=float(clip.fps))
    report("inference", 0.0)
    t0 = time.perf_counter()
    # Each frame's map is observed for the fit as soon as it is final, and the likely keyframes
    # photo-fitted, on the core the predictor leaves mostly idle: in a process of its own, which
    # then fits the clip (fit_process.FitProcess), or on a thread (fit.FrameObserver).
    in_process = fp.available() if fit_process is None else bool(fit_process)
    observer = fp.FitProcess(template, options, frames=n) if in_process else FrameObserver(template, options, frames=n)
    try:
        maps, reasons, stats = infer.predict_frames(predictor, clip.frames, masks, None, list(clip.names),
                                                    segmenter=segmenter, report=lambda f: report("inference", f),
                                                    cancelled=cancelled, on_map=observer.submit)
    except BaseException:
        observer.cancel()
        raise
    timings["inference"] = time.perf_counter() - t0
    found = sum(m is not None for m in maps)
    if found == 0:
        observer.cancel()
        first = next((r for r in reasons if r), "")
        raise DualPMError(f"{clip.path}: no frame of the clip shows an animal (0 of {n} frames; frame 1: "
                          f"{first or 'no animal found'})")
    t0 = time.perf_counter()
    if in_process:
        fit = observer.fit(maps, report=report, cancelled=cancelled, meanwhile=meanwhile)
    else:
        if meanwhile is not None:
            meanwhile()
        fit = fit_clip(maps, template=template, options=options, report=report, cancelled=cancelled,
                       observed=observer)
    timings["fit"] = time.perf_counter() - t0
    timings["fit_in_process"] = float(in_process)
    timings["observe_during_inference"] = observer.seconds
    world = motion.world_motion(fit, clip.fps)
    return Animation(clip=clip, fit=fit, motion=world, maps=maps, reasons=reasons,
                     mask_paths=list(mask_paths) if mask_paths is not None else [None] * n,
                     inference=stats, timings=timings, model_version=model_version(predictor))


def frame_error_summary(reasons: list) -> dict:
    """How many frames failed for which reason (reasons shortened to their part before '(')."""
    out: dict = {}
    for r in reasons:
        if r:
            key = r.split(" (")[0]
            out[key] = out.get(key, 0) + 1
    return out


def fps_figures(frames: int, fps: float, seconds: float) -> dict:
    """frames per second processed and the real-time factor (clip length over processing time;
    above 1 is faster than real time)."""
    clip_s = frames / fps if fps > 0 else float("nan")
    return {"frames": int(frames), "clip_seconds": round(float(clip_s), 4), "seconds": round(float(seconds), 4),
            "frames_per_second": round(frames / seconds, 3) if seconds > 0 else None,
            "real_time_factor": round(clip_s / seconds, 3) if seconds > 0 else None,
            "faster_than_real_time": bool(seconds > 0 and clip_s / seconds > 1.0)}
