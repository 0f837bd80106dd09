"""`dualpm animate` speed: a 10 s clip at 12 fps (120 frames), the whole command, against real time.

The clip: Muybridge's cat walking, trotting and galloping (.cache/photos/cat_walk, 24 real
frames, scripts/data/cat_walk.sh), played forwards and back until it lasts 10 s, upscaled to
332 x 218 and encoded as H.264 with PyAV. The whole command runs as a user runs it (a fresh
`dualpm animate` process: Python and Blender start-up, decoding, batched inference with the
shipped model on the CPU, the clip fit, every output), and its wall time is the figure; the stage
times come from its NAME.json. Target: faster than real time (real-time factor = clip length /
wall time > 1).

Beside it, in the same run, the inference stage alone (video.infer.predict_frames, in process)
with tracked crops (one predictor run for most frames) against predict_photo's two runs for every
frame, the way one photo is done.

    python benchmarks/bench_animate.py [--quick] [--json FILE] [--strip PNG]   (--quick: a 2 s clip)
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FPS = 12
WALK = os.path.join(ROOT, ".cache", "photos", "cat_walk")


def clip_frames(seconds: float) -> np.ndarray:
    """(T, 218, 332, 3): the 24 walk frames forwards and back, T = seconds x FPS."""
    from PIL import Image

    files = sorted(f for f in os.listdir(WALK) if f.endswith(".png"))
    if len(files) != 24:
        raise FileNotFoundError(f"{WALK}: expected 24 frames (run bash scripts/data/cat_walk.sh)")
    frames = [np.asarray(Image.open(os.path.join(WALK, f)).convert("RGB").resize((332, 218), Image.Resampling.LANCZOS))
              for f in files]
    cycle = frames + frames[-2:0:-1]
    n = int(round(seconds * FPS))
    return np.stack([cycle[i % len(cycle)] for i in range(n)])


def whole_command(video: str, out: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "dualpm"), "animate", video, "--out", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dualpm animate failed: {proc.stderr.strip().splitlines()[-1:]}")
    name = os.path.splitext(os.path.basename(video))[0]
    with open(os.path.join(out, f"{name}.json"), encoding="utf-8") as f:
        return wall, json.load(f)


def inference_only(frames: np.ndarray) -> list[dict]:
    """Tracked crops against predict_photo on every frame, on the same frames, in process."""
    from dualpm_addon.inference import Runner
    from dualpm_addon.video import infer

    runner = Runner(device="cpu")
    runner.predict(frames[0, :160, :160])  # warm up
    out = {}
    for label, every in (("tracked crops", infer.KEYFRAME_EVERY), ("predict_photo per frame", 1)):
        t0 = time.perf_counter()
        maps, _, stats = infer.predict_frames(runner, frames, keyframe_every=every)
        out[label] = (time.perf_counter() - t0, stats, sum(m is not None for m in maps))
    (ts, st, found_t), (tp, sp, found_p) = out["tracked crops"], out["predict_photo per frame"]
    n = len(frames)
    return [
        {"name": "inference per frame, tracked crops", "value": round(ts / n * 1000, 1), "unit": "ms",
         "peer": "predict_photo per frame", "peer_value": round(tp / n * 1000, 1), "ratio": round(ts / tp, 3),
         "crops_per_frame": round(st["crops"] / n, 3), "peer_crops_per_frame": round(sp["crops"] / n, 3),
         "frames_with_animal": found_t, "peer_frames_with_animal": found_p,
         "frames_refound": st["frames_refound"]},
        {"name": "predictor crops per frame, tracked", "value": round(st["crops"] / n, 3), "unit": "crops",
         "peer": "predict_photo per frame", "peer_value": round(sp["crops"] / n, 3),
         "ratio": round(st["crops"] / sp["crops"], 3)},
    ]


def write_strip(preview_mp4: str, path: str, count: int = 6, height: int = 218) -> None:
    """A picture strip for the docs: the overlay halves of `count` frames of NAME.mp4 (the first
    cycle of the walk: walking, trotting, galloping)."""
    from dualpm_addon import preview
    from dualpm_addon.video import decode

    clip = decode.read(preview_mp4)
    w = (clip.size[1] - 4) // 2
    idx = np.linspace(0, min(len(clip), 24) - 1, count).round().astype(int)
    tiles = [clip.frames[i][:, w + 4:] for i in idx]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    out = np.concatenate([x for i, t in enumerate(tiles) for x in ([gap] if i else []) + [t]], axis=1)
    preview.write_png(path, preview.resize_nearest(out, height))


def run(quick: bool = False, strip: str | None = None) -> list[dict]:
    from dualpm_addon.video import preview as video_preview

    seconds = 2.0 if quick else 10.0
    frames = clip_frames(seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-animate-") as d:
        # the input as it always was encoded (the outputs' own preset may change)
        video = video_preview.write_video(os.path.join(d, "cat_walk.mp4"), frames, FPS, crf="18", preset="veryfast")
        wall, s = whole_command(video, os.path.join(d, "out"))
        if strip:
            write_strip(os.path.join(d, "out", "cat_walk.mp4"), strip)
        n = len(frames)
        clip_s = n / FPS
        t = s["timings_s"]
        rows.append({"name": f"dualpm animate, {clip_s:g} s clip at {FPS} fps ({n} frames), whole command",
                     "value": round(wall, 2), "unit": "s", "limit": f"< {clip_s:g} s (real time)",
                     "pass": wall < clip_s, "frames": n})
        rows.append({"name": "frames per second, whole command", "value": round(n / wall, 2), "unit": "fps",
                     "target": FPS, "ratio": round(n / wall / FPS, 3)})
        rows.append({"name": "real-time factor (clip length / wall time)", "value": round(clip_s / wall, 3),
                     "unit": "x", "target": 1.0, "ratio": round(clip_s / wall, 3)})
        rows.append({"name": "fps reported in NAME.json (command's own clock)",
                     "value": s["speed"]["frames_per_second"], "unit": "fps"})
        outputs = t.get("outputs", sum(t.get(k, 0.0) for k in ("write_clip_video", "scene", "write_blend",
                                                                  "write_glb", "write_bvh", "write_preview")))
        start = wall - t["total"] + t.get("import_bpy", 0.0) + t.get("predictor_start", 0.0)
        for label, sec in (("start-up (Python, Blender, model)", start), ("decode", t["decode"]),
                           ("inference", t["inference"]), ("fit", t["fit"]), ("outputs", outputs)):
            rows.append({"name": f"  {label}, per frame", "value": round(sec / n * 1000, 1), "unit": "ms",
                         "seconds": round(sec, 3)})
        if "observe_during_inference" in t:  # on a thread beside the predictor: inside inference's wall time
            rows.append({"name": "    observing and keyframe photo fits during inference, per frame",
                         "value": round(t["observe_during_inference"] / n * 1000, 1), "unit": "ms"})
        for k, v in sorted(s["fit"]["timings_s"].items()):
            if k not in ("total", "fit_per_frame"):
                rows.append({"name": f"    fit: {k}, per frame", "value": round(v / n * 1000, 1), "unit": "ms"})
        rows.append({"name": "frames tracked by the fit", "value": s["fit"]["frames_tracked"], "unit": "frames",
                     "of": n, "bridged": s["fit"]["frames_bridged"]})
        rows.append({"name": "rig IoU against each frame's mask, mean", "value": s["fit"]["rig_iou_mean"],
                     "unit": "", "redetected_frames": s["fit"].get("frames_redetected")})
        rows += inference_only(frames[: min(n, 48)])
    rows[0]["machine"] = report.machine()
    return rows


if __name__ == "__main__":
    sys.exit(report.main(run, __doc__.splitlines()[0],
                         options={"strip": {"default": None, "metavar": "PNG",
                                            "help": "write a picture strip of overlay frames here"}}))
