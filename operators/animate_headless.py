"""`dualpm animate VIDEO --out DIR`: a video of an animal to its motion on its own fitted rig.

    dualpm animate VIDEO --out DIR [--start S] [--end S] [--fps N] [--mask-dir DIR] [--bvh-out FILE]
                   [--server URL --token T] [--device auto|cpu|cuda] [--model FILE] [--no-preview]

    blender -b --python-expr "import sys, bl_ext.user_default.dualpm.operators.animate_headless as a; \\
        sys.exit(a.main(['clip.mp4', '--out', 'out']))"

VIDEO: a video file (mp4, mov, webm, mkv, ...), a folder of images, or a printf pattern
(frames/%04d.png); see dualpm_addon/video/decode.py. NAME is its stem. Writes, in DIR:

    NAME.blend      the camera (where it stood in the first frame), the rig fitted once to the
                    whole clip with its action over the clip's frames, the skinned surface, and
                    the video as the camera's background (NAME.clip.mp4, referenced relatively)
    NAME.clip.mp4   the clip's frames as fitted (after --start/--end/--fps): the background
    NAME.glb        the rig, the skinned surface and the motion (dualpm_addon.gltf_write)
    NAME.bvh        the animal's motion capture on its own skeleton, metres (--bvh-out FILE
                    writes it there instead)
    NAME.mp4        the preview: the video beside the rig's overlay, frame by frame
    NAME.json       per-frame figures (tracked, bridged, rig IoU, crop, mask), the shape, timings
                    per stage, frames per second and the real-time factor; written last

Each file is written under a temporary name and renamed when complete, NAME.json last; when
anything fails, every output of this run and any stale one from an earlier run are removed and
NAME.json says {"status": "failed", "reason": ...}, so DIR never holds a set of files that
looks complete and is not. Bad input exits 2 with one line.

--mask-dir DIR: DIR/NAME.mask.png per frame, NAME the frame's file stem in a sequence or, for a
video, its 6-digit number counted from 1 (as `ffmpeg -i VIDEO DIR/%06d.png` names frames).

--segmenter auto outlines each frame with the segmenter, as a photo is; off by default, since at
about 0.3 s a frame it alone exceeds what a 12 fps clip allows (docs/video.md, Speed).

Inference runs in this process by default (ONNX Runtime; no server to start for one clip), or
on a server with --server URL (ours or Triton), in batches either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from ._core import core

OUTPUTS = ("blend", "clip.mp4", "glb", "bvh", "mp4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="video file, image folder or printf pattern (frames/%%04d.png)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--start", type=float, metavar="S", help="first second of the clip (default: its start)")
    parser.add_argument("--end", type=float, metavar="S", help="last second of the clip (default: its end)")
    parser.add_argument("--fps", type=float, metavar="N",
                        help="frames per second to fit (default: the video's own; for an image sequence its rate, "
                             "default 24)")
    parser.add_argument("--mask-dir", metavar="DIR", help="per-frame masks DIR/NAME.mask.png (NAME: a sequence "
                        "frame's stem, or a video frame's number from 1, 6 digits)")
    parser.add_argument("--bvh-out", metavar="FILE", help="write the BVH here instead of DIR/NAME.bvh")
    parser.add_argument("--server", metavar="URL", help="use a running inference server (ours or Triton)")
    parser.add_argument("--token", metavar="T", help="bearer token for --server")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", metavar="FILE", help="ONNX model (default: assets/dualpm.onnx)")
    parser.add_argument("--no-preview", action="store_true", help="skip NAME.mp4 (the side-by-side preview)")
    parser.add_argument("--segmenter", default="off", metavar="auto|off|FILE",
                        help="outline every frame with the segmenter, as a photo is (auto: the shipped one; "
                             "0.3 s more a frame on a quiet 2-core machine); default off: the predictor's own masks")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Progress:
    """One stderr line per stage and every quarter of it."""

    def __init__(self, frames: int = 0):
        self.frames, self.last = frames, {}

    def __call__(self, stage: str, fraction: float) -> None:
        step = int(fraction * 4)
        if self.last.get(stage) == step:
            return
        self.last[stage] = step
        where = f"frame {int(round(fraction * self.frames))}/{self.frames}" if self.frames else f"{fraction * 100:.0f}%"
        _say(f"[{stage}] {where}")


def make_predictor(args):
    err = core("errors").DualPMError
    if args.model and not os.path.isfile(args.model):
        raise err(f"--model {args.model}: no such file")
    if args.token and not args.server:
        raise err("--token needs --server")
    if args.server:
        return core("client").InferenceClient(url=args.server, token=args.token)
    from .session import _LazyRunner

    return _LazyRunner(args.model, args.device)


def output_paths(out_dir: str, name: str, bvh_out: str | None = None) -> dict:
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in OUTPUTS + ("json",)}
    if bvh_out:
        paths["bvh"] = os.path.abspath(bvh_out)
    return paths


def _remove(paths) -> None:
    for p in paths:
        for q in (p, f"{p}.partial"):
            try:
                os.remove(q)
            except OSError:
                pass


def video_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    if "%" in base:  # frames/cat_%04d.png -> cat (else the folder's name)
        stem = base.split("%")[0].rstrip("_-. ")
        base = stem or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return os.path.splitext(base)[0] or "video"


def write_clip_video(paths: dict, clip, timings: dict) -> None:
    """NAME.clip.mp4, the .blend's camera background (written while the clip is fitted)."""
    t0 = time.perf_counter()
    core("video.preview").write_video(paths["clip.mp4"], clip.frames, clip.fps)
    timings["write_clip_video"] = time.perf_counter() - t0


def write_outputs(result, paths: dict, timings: dict, preview: bool = True) -> None:
    """Every file but NAME.json and NAME.clip.mp4 (write_clip_video, already written: the scene
    loads it), in an empty scene (bpy), each atomically."""
    import bpy

    from . import video

    vpreview = core("video.preview")
    clip = result.clip
    _write_files(result, paths, timings, bpy, video)
    if preview:
        # after the scene, on this thread: the preview draws half its frames in a forked copy
        # (video/preview.py), which needs this process to run one thread
        t = time.perf_counter()
        vpreview.write_preview(paths["mp4"], clip.frames, result.fit, clip.fps)
        timings["write_preview"] = time.perf_counter() - t


def _write_files(result, paths, timings, bpy, video) -> None:
    clip = result.clip
    t0 = time.perf_counter()
    bpy.ops.wm.read_homefile(use_empty=True)
    context = bpy.context
    name = os.path.splitext(os.path.basename(paths["blend"]))[0]
    image, user = video.load_background(paths["clip.mp4"], len(clip), 0, relative_to=paths["blend"])
    video.build_clip_scene(context, result, name, image, user, video.provenance(result, clip.path))
    timings["scene"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tmp = paths["blend"] + ".partial"
    bpy.ops.wm.save_as_mainfile(filepath=tmp, copy=True, check_existing=False, relative_remap=False)
    os.replace(tmp, paths["blend"])
    timings["write_blend"] = time.perf_counter() - t0

    motion = core("video.motion")
    t0 = time.perf_counter()
    core("atomic").write_bytes(paths["glb"], motion.glb_bytes(result.fit, result.motion, name), "glTF file")
    timings["write_glb"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    core("bvh").write(paths["bvh"], motion.to_bvh(result.fit, result.motion))
    timings["write_bvh"] = time.perf_counter() - t0


def run(args) -> int:
    t_start = time.perf_counter()
    err = core("errors").DualPMError
    decode = core("video.decode")
    decode.check_range(args.start, args.end, args.fps)
    if args.mask_dir and not os.path.isdir(args.mask_dir):
        raise err(f"--mask-dir {args.mask_dir}: no such folder")
    if args.bvh_out and not os.path.isdir(os.path.dirname(os.path.abspath(args.bvh_out))):
        raise err(f"--bvh-out {args.bvh_out}: the folder does not exist")
    predictor = make_predictor(args)
    segmenter = None
    if args.segmenter != "off":
        if args.segmenter != "auto" and not os.path.isfile(args.segmenter):
            raise err(f"--segmenter {args.segmenter}: no such file (auto, off or an ONNX file)")
        segmenter = core("segment").load(None if args.segmenter == "auto" else args.segmenter)
    name = video_name(args.video)
    os.makedirs(args.out, exist_ok=True)
    paths = output_paths(args.out, name, args.bvh_out)
    written = [paths[k] for k in OUTPUTS]
    timings: dict = {}
    try:
        # Blender writes the .blend: checked before any work, loaded while the clip is fitted
        if "bpy" not in sys.modules and importlib.util.find_spec("bpy") is None:
            raise err("animate needs Blender: install the bpy module (pip install bpy==5.0.1, Python 3.11) "
                      "or run it inside Blender (blender -b --python-expr ...)")
        _say(f"[decode] {args.video}")
        t0 = time.perf_counter()
        clip = decode.read(args.video, args.start, args.end, args.fps)
        timings["decode"] = time.perf_counter() - t0
        masks, mask_paths = decode.frame_masks(clip, args.mask_dir)
        _say(f"[decode] {len(clip)} frames at {clip.fps:.6g} fps, {clip.size[1]}x{clip.size[0]} "
             f"(source {clip.source_size[1]}x{clip.source_size[0]}), {timings['decode']:.2f} s"
             + (f", {sum(m is not None for m in masks)} masks" if args.mask_dir else ""))
    except BaseException as e:
        _fail(paths, written, args, e, t_start)
        raise
    try:
        def meanwhile():  # while the fit process fits: this process's core is free
            t = time.perf_counter()
            import bpy  # noqa: F401

            timings["import_bpy"] = time.perf_counter() - t
            write_clip_video(paths, clip, timings)

        result = core("video.animate").animate(predictor, clip, masks, mask_paths, report=_Progress(len(clip)),
                                               segmenter=segmenter, meanwhile=meanwhile)
        timings.update(result.timings)
        fit = result.fit
        _say(f"[fit] {int(fit.tracked.sum())} of {len(clip)} frames tracked, {int(fit.bridged.sum())} bridged; "
             f"inference {timings['inference']:.2f} s, fit {timings['fit']:.2f} s")
        t0 = time.perf_counter()
        write_outputs(result, paths, timings, preview=not args.no_preview)
        timings["outputs"] = time.perf_counter() - t0  # wall time: the preview overlaps the rest
        if args.no_preview:
            _remove([paths["mp4"]])
        total = time.perf_counter() - t_start
        summary = result.summary()
        va = core("video.animate")
        summary["speed"] = va.fps_figures(len(clip), clip.fps, total)
        summary["speed"]["processing_seconds_without_outputs"] = round(
            sum(timings.get(k, 0.0) for k in ("decode", "predictor_start", "inference", "fit")), 4)
        summary["timings_s"] = {k: round(float(v), 4) for k, v in timings.items()}
        summary["timings_s"]["total"] = round(total, 4)
        summary["frame_failures"] = va.frame_error_summary(result.reasons)
        summary["outputs"] = {k: os.path.basename(v) for k, v in paths.items()
                              if not (k == "mp4" and args.no_preview)}
        summary["input_file"] = os.path.abspath(args.video)
        summary["dualpm_version"] = _version()
        core("atomic").write_json(paths["json"], summary, indent=2, sort_keys=True)
    except BaseException as e:
        _fail(paths, written, args, e, t_start)
        raise
    finally:
        close = getattr(predictor, "close", None)
        if close is not None:
            close()
    s = summary["speed"]
    _say(f"{name}: {len(clip)} frames in {s['seconds']:.2f} s ({s['frames_per_second']:.1f} fps, "
         f"{s['real_time_factor']:.2f}x real time) into {args.out}")
    return 0


def _fail(paths, written, args, e, t_start) -> None:
    """Remove this run's outputs (and stale ones) and say why in NAME.json."""
    err = core("errors").DualPMError
    _remove(written)
    if isinstance(e, KeyboardInterrupt):
        reason = "interrupted"
    elif isinstance(e, err):
        reason = str(e)
    else:
        import traceback

        traceback.print_exc()
        reason = f"unexpected {type(e).__name__}: {' '.join(str(e).split())}"
    try:
        core("atomic").write_json(paths["json"], {
            "status": "failed", "reason": reason, "input_file": os.path.abspath(args.video),
            "seconds": round(time.perf_counter() - t_start, 3), "dualpm_version": _version()}, indent=2, sort_keys=True)
    except err:
        pass


def _version() -> str:
    from ._core import package

    return package().__version__


def main(argv=None) -> int:
    """Entry point for Blender's own Python, where the extension is installed:

        blender -b --python-expr "import sys, bl_ext.user_default.dualpm.operators.animate_headless as a; \\
            sys.exit(a.main(['clip.mp4', '--out', 'out']))"
    """
    parser = argparse.ArgumentParser(prog="dualpm animate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except core("errors").DualPMError as e:
        print(f"dualpm animate: error: {e}", file=sys.stderr)
        return 2
