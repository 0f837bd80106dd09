"""The clip fit (dualpm_addon.video.fit_clip) beside independent per-frame photo fits, on
synthetic clips with ground truth and on still photos filmed by a panning, zooming camera.

Clips (training/clips.py): consecutive frames of one animation, one look and camera path; the
held-out animations (training.dataset.HELD_OUT_CLIPS) on seen species, and unseen species
(HELD_OUT_SPECIES). Each clip is fitted twice, on its exact maps (evaluate.true_map) and on the
shipped predictor's maps (video.infer.predict_frames, what `dualpm animate` runs), by the clip
fit and by independent fits of every frame (video.baseline: `dualpm reconstruct`'s photo fit).
Figures per clip and their means:

  joint error   mean over frames, % of body length (translation + scale aligned per frame)
  jitter        mean joint acceleration in camera space, % of body length per frame^2
  bone length   largest relative range of a bone's length over the clip (0 by construction)
  foot slide    mean displacement per frame of feet the truth has in contact, % of leg length
  fit ms/frame  the fit's wall time per frame (inference apart)

Still animal, moving camera: one pose held while the camera pans 6 degrees and zooms 1.25x
(synthetic, exact maps), and pan-and-zoom crops of real photos (.cache/photos: the Muybridge cat,
the quokka) through the predictor and the shipped segmenter (a close-up quokka is no animal to
the predictor alone): joint acceleration relative to the root (the pose's own
motion), % of body length per frame^2, target <= 0.5.

    python benchmarks/bench_video_fit.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# (split, species, clip, camera, start); every clip runs at its own 24 fps
CLIPS = (("heldout_clips", "horse", "Gallop_Jump", "fixed", 0),
         ("heldout_clips", "husky", "Idle_HitReact2", "orbit", 0),
         ("unseen_species", "deer", "Walk", "fixed", 0),
         ("unseen_species", "wolf", "Gallop", "orbit", 0))
PHOTOS = ("muybridge_cat.png", "quokka.jpg")
SIZE = 320  # render side in pixels: the predictor sees the animal's crop (predict_photo) as in a video frame
TARGETS = {"exact_error_pct": 3.0, "predicted_error_ratio": 0.8, "jitter_ratio": 1 / 3, "foot_slide_pct": 2.0,
           "still_pose_jitter_pct": 0.5}


def _templates():
    return os.path.join(ROOT, ".cache", "templates")


def _runner():
    from dualpm_addon.inference import Runner

    return Runner(device="cpu")


def _predicted(runner, rgbs, focal_mm, segmenter=None):
    from dualpm_addon.video.infer import predict_frames

    tic = time.perf_counter()
    maps, _, _ = predict_frames(runner, np.stack(rgbs), focal_mm=focal_mm, segmenter=segmenter)
    return maps, time.perf_counter() - tic


def _figures(joints, m2c, names, parents, frames, body_length, contacts, leg, seconds):
    from training import clips

    err = clips.joint_errors(joints, names, frames, body_length)
    fitted_leg = clips.fitted_leg_length(joints, names)
    fitted_body = body_length * fitted_leg / leg  # the fit's own size: scale-free figures
    return {"error_pct": float(np.nanmean(err)), "jitter_pct": clips.jitter_pct(joints, fitted_body),
            "pose_jitter_pct": clips.pose_jitter_pct(joints, m2c, fitted_body),
            "bone_length_variation": clips.bone_length_variation(joints, parents),
            "foot_slide_pct": clips.foot_slide_pct(joints, names, contacts, fitted_leg),
            "fit_ms_per_frame": 1000.0 * seconds / len(frames), "frames_fitted": int(np.isfinite(err).sum())}


def fit_both(frames_maps, frames, template, body_length, fps, contacts, leg):
    from dualpm_addon.video import ClipOptions, fit_clip
    from dualpm_addon.video.baseline import independent_fits

    tic = time.perf_counter()
    clip = fit_clip(frames_maps, template, ClipOptions(fps=fps))
    sec = time.perf_counter() - tic
    ours = _figures(clip.joints_cam, clip.model_to_camera, clip.joint_names, clip.parents, frames, body_length,
                    contacts, leg, sec)
    ours["frames_tracked"] = int(clip.tracked.sum())
    ours["rig_iou"] = float(np.nanmean(clip.rig_iou)) if np.isfinite(clip.rig_iou).any() else float("nan")
    ours["timings"] = {k: round(float(v), 3) for k, v in clip.timings.items()}
    base = independent_fits(frames_maps, template)
    peer = _figures(base["joints"], base["model_to_camera"], base["joint_names"], base["parents"], frames,
                    body_length, contacts, leg, float(base["seconds"].sum()))
    return ours, peer


def run_clip(split, species, clip_name, camera, start, count, runner, template):
    from dualpm_addon import template as template_io
    from training import clips

    t = template_io.load(os.path.join(_templates(), f"{species}.npz"))
    count = min(count, t.clip(clip_name).num_frames - start)
    frames = clips.render_clip(_templates(), species, clip_name, seed=7, start=start, count=count, camera=camera,
                               size=SIZE)
    fps = float(frames[0]["clip_fps"])
    body_length = t.body_length
    contacts, leg = clips.true_contacts(frames, fps)
    truth = np.stack([np.asarray(f["joints"], np.float64) for f in frames])
    names = [str(n) for n in frames[0]["joint_names"]]
    out = {"split": split, "species": species, "clip": clip_name, "camera": camera, "frames": len(frames),
           "fps": fps, "true_foot_slide_pct": clips.foot_slide_pct(truth, names, contacts, leg),
           "true_jitter_pct": clips.jitter_pct(truth, body_length), "contact_frames": int(contacts.sum())}
    exact = [clips.exact_frame(f) for f in frames]
    out["exact"], out["exact_per_frame"] = fit_both(exact, frames, template, body_length, fps, contacts, leg)
    if runner is not None:
        maps, sec = _predicted(runner, [f["rgb"] for f in frames], float(frames[0]["focal_mm"]))
        out["inference_ms_per_frame"] = 1000.0 * sec / len(frames)
        out["predicted"], out["predicted_per_frame"] = fit_both(maps, frames, template, body_length, fps, contacts,
                                                                leg)
    return out


def still_synthetic(count, template):
    """A held pose (horse Idle, frame 0) under a panning, zooming camera, exact maps."""
    from dualpm_addon.video import ClipOptions, fit_clip
    from training import clips

    frames = clips.render_clip(_templates(), "horse", "Idle", seed=3, count=count, stride=0, camera="pan_zoom",
                               travel=False)
    clip = fit_clip([clips.exact_frame(f) for f in frames], template, ClipOptions(fps=24.0))
    body = clip.body_length
    return {"name": "horse Idle held, pan 6 deg + zoom 1.25x (exact maps)", "frames": count,
            "pose_jitter_pct": clips.pose_jitter_pct(clip.joints_cam, clip.model_to_camera, body),
            "jitter_pct": clips.jitter_pct(clip.joints_cam, body), "frames_tracked": int(clip.tracked.sum())}


def still_photo(name, count, runner, template):
    from dualpm_addon import image_io
    from dualpm_addon.video import ClipOptions, fit_clip
    from dualpm_addon.video.baseline import independent_fits
    from training import clips

    path = os.path.join(ROOT, ".cache", "photos", name)
    rgb = image_io.read_photo(path).rgb
    frames = clips.still_photo_clip(rgb, count=count, out_size=(320, 320))
    from dualpm_addon.pipeline import load_segmenter

    maps, sec = _predicted(runner, frames, None, load_segmenter("auto")[0])
    clip = fit_clip(maps, template, ClipOptions(fps=12.0))
    body = clip.body_length
    base = independent_fits(maps, template)
    ok = np.all(np.isfinite(base["joints"]), axis=(1, 2))
    peer = float("nan")
    if ok.sum() >= 3:

        peer = clips.pose_jitter_pct(base["joints"][ok], base["model_to_camera"][ok], body)
    return {"name": f"{name} pan + zoom 1.2x (predicted)", "frames": count,
            "pose_jitter_pct": clips.pose_jitter_pct(clip.joints_cam, clip.model_to_camera, body),
            "per_frame_pose_jitter_pct": peer, "frames_tracked": int(clip.tracked.sum()),
            "inference_ms_per_frame": 1000.0 * sec / count, "fit_ms_per_frame": 1000.0 * clip.timings["total"] / count}


def long_clip(runner, template, count=120):
    """The fit's cost on a clip of a 10 s clip's length: horse Eating, 120 frames at 320 px,
    predicted maps; wall and CPU time per frame (the fit runs on one thread: CPU time is what it
    costs on a quiet machine) and the stage times."""
    from dualpm_addon.video import ClipOptions, fit_clip
    from training import clips

    frames = clips.render_clip(_templates(), "horse", "Eating", seed=11, count=count, camera="fixed", size=SIZE)
    maps, sec = _predicted(runner, [f["rgb"] for f in frames], float(frames[0]["focal_mm"]))
    cpu, tic = time.process_time(), time.perf_counter()
    clip = fit_clip(maps, template, ClipOptions(fps=24.0))
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu
    err = clips.joint_errors(clip.joints_cam, clip.joint_names, frames, template.body_length)
    return {"frames": count, "fit_wall_ms_per_frame": 1000 * wall / count, "fit_cpu_ms_per_frame": 1000 * cpu / count,
            "inference_ms_per_frame": 1000 * sec / count, "error_pct": float(np.nanmean(err)),
            "frames_tracked": int(clip.tracked.sum()), "timings": {k: round(float(v), 3) for k, v in clip.timings.items()}}


def _mean(rows, key, sub):
    v = [r[key][sub] for r in rows if key in r and np.isfinite(r[key][sub])]
    return float(np.mean(v)) if v else float("nan")


def run(quick: bool = False, predicted: bool = True) -> list[dict]:
    from dualpm_addon import template as template_io
    from dualpm_addon.errors import DualPMError

    template = template_io.load_default()
    count = 8 if quick else 16
    clips_to_run = CLIPS[::2] if quick else CLIPS
    runner = _runner() if predicted else None
    results = [run_clip(*c, count=count, runner=runner, template=template) for c in clips_to_run]
    still = [still_synthetic(8 if quick else 12, template)]
    if runner is not None:
        for name in PHOTOS[: 1 if quick else None]:
            try:
                still.append(still_photo(name, 8 if quick else 12, runner, template))
            except (DualPMError, OSError) as e:
                still.append({"name": name, "error": str(e)})
    rows = []
    for r in results:
        tag = f"{r['species']} {r['clip']} ({r['camera']}, {r['frames']} f)"
        for kind in ("exact", "predicted"):
            if kind not in r:
                continue
            o, p = r[kind], r[kind + "_per_frame"]
            rows.append({"name": f"{kind} {tag}: joint error", "value": round(o["error_pct"], 3), "unit": "% body",
                         "peer": "per-frame", "peer_value": round(p["error_pct"], 3),
                         "ratio": round(o["error_pct"] / p["error_pct"], 3)})
            rows.append({"name": f"{kind} {tag}: jitter", "value": round(o["jitter_pct"], 3), "unit": "%/frame^2",
                         "peer": "per-frame", "peer_value": round(p["jitter_pct"], 3),
                         "ratio": round(o["jitter_pct"] / p["jitter_pct"], 3)})
            rows.append({"name": f"{kind} {tag}: foot slide", "value": round(o["foot_slide_pct"], 3),
                         "unit": "% leg", "peer": "per-frame", "peer_value": round(p["foot_slide_pct"], 3),
                         "ratio": round(o["foot_slide_pct"] / p["foot_slide_pct"], 3)})
            rows.append({"name": f"{kind} {tag}: fit time", "value": round(o["fit_ms_per_frame"], 1),
                         "unit": "ms/frame", "peer": "per-frame", "peer_value": round(p["fit_ms_per_frame"], 1),
                         "ratio": round(o["fit_ms_per_frame"] / p["fit_ms_per_frame"], 3)})
            assert o["bone_length_variation"] < 1e-6, "one shape per clip: bone lengths must not change"
    for kind in ("exact", "predicted"):
        sel = [r for r in results if kind in r]
        if not sel:
            continue
        e, pe = _mean(sel, kind, "error_pct"), _mean(sel, kind + "_per_frame", "error_pct")
        j, pj = _mean(sel, kind, "jitter_pct"), _mean(sel, kind + "_per_frame", "jitter_pct")
        fs = _mean(sel, kind, "foot_slide_pct")
        rows.append({"name": f"{kind} mean joint error", "value": round(e, 3), "unit": "% body", "peer": "per-frame",
                     "peer_value": round(pe, 3), "ratio": round(e / pe, 3)})
        rows.append({"name": f"{kind} mean jitter", "value": round(j, 3), "unit": "%/frame^2", "peer": "per-frame",
                     "peer_value": round(pj, 3), "ratio": round(j / pj, 3)})
        rows.append({"name": f"{kind} mean foot slide", "value": round(fs, 3), "unit": "% leg",
                     "limit": TARGETS["foot_slide_pct"], "pass": bool(fs < TARGETS["foot_slide_pct"])})
        rows.append({"name": f"{kind} bone-length variation (max)",
                     "value": float(max(r[kind]["bone_length_variation"] for r in sel)), "unit": "relative",
                     "limit": 1e-6, "pass": True})
        if kind == "exact":
            rows.append({"name": "exact joint error <= 3 %", "value": round(e, 3), "unit": "% body",
                         "limit": TARGETS["exact_error_pct"], "pass": bool(e <= TARGETS["exact_error_pct"])})
        else:
            rows.append({"name": "predicted error vs per-frame (<= 0.8)", "value": round(e / pe, 3), "unit": "ratio",
                         "limit": TARGETS["predicted_error_ratio"],
                         "pass": bool(e / pe <= TARGETS["predicted_error_ratio"])})
            rows.append({"name": "predicted jitter vs per-frame (<= 1/3)", "value": round(j / pj, 3), "unit": "ratio",
                         "limit": round(TARGETS["jitter_ratio"], 3), "pass": bool(j / pj <= TARGETS["jitter_ratio"])})
    for s in still:
        if "error" in s:
            rows.append({"name": f"still: {s['name']}", "value": "failed", "unit": s["error"]})
            continue
        row = {"name": f"still: {s['name']}: pose jitter", "value": round(s["pose_jitter_pct"], 4),
               "unit": "%/frame^2", "limit": TARGETS["still_pose_jitter_pct"],
               "pass": bool(s["pose_jitter_pct"] <= TARGETS["still_pose_jitter_pct"])}
        rows.append(row)
        if np.isfinite(s.get("per_frame_pose_jitter_pct", np.nan)):
            rows.append({"name": f"still: {s['name']}: per-frame pose jitter",
                         "value": round(s["per_frame_pose_jitter_pct"], 4), "unit": "%/frame^2"})
    long = long_clip(runner, template) if runner is not None and not quick else None
    if long is not None:
        rows.append({"name": "120-frame clip (horse Eating, predicted): fit wall time", "unit": "ms/frame",
                     "value": round(long["fit_wall_ms_per_frame"], 1)})
        rows.append({"name": "120-frame clip (horse Eating, predicted): fit CPU time", "unit": "ms/frame",
                     "value": round(long["fit_cpu_ms_per_frame"], 1)})
        rows.append({"name": "120-frame clip (horse Eating, predicted): joint error", "unit": "% body",
                     "value": round(long["error_pct"], 3)})
    speed = [r["predicted"]["fit_ms_per_frame"] for r in results if "predicted" in r]
    inf = [r["inference_ms_per_frame"] for r in results if "inference_ms_per_frame" in r]
    if speed:
        rows.append({"name": "clip fit per frame (predicted maps, mean)", "value": round(float(np.mean(speed)), 1),
                     "unit": "ms/frame"})
        rows.append({"name": "inference per frame (predict_frames, mean)", "value": round(float(np.mean(inf)), 1),
                     "unit": "ms/frame"})
        rows.append({"name": "inference + fit per frame vs real time at 12 fps",
                     "value": round(float(np.mean(speed) + np.mean(inf)), 1), "unit": "ms/frame", "limit": 83.3,
                     "pass": bool(np.mean(speed) + np.mean(inf) <= 83.3)})
    rows.append({"name": "details", "value": "json", "unit": "", "clips": results, "still": still, "long": long})
    return rows


if __name__ == "__main__":
    raise SystemExit(report.main(run, __doc__.splitlines()[0]))
