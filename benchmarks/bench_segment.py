"""The animal's outline without a user mask: U^2-Net-p (assets/u2netp.onnx) against the predictor's
own layer-0 mask, mask IoU against true masks, and the segmenter's latency (target <= 0.5 s).

Sets with a true mask: the quokka photo (its annotated outline polygon) and two sets of 60
renders (`dualpm synth --count 60 --seed 7` and `--seed 8`, `--closeup-probability 0`; the true
mask is the render's visible animal). Three masks, each in photo pixels:

* segmenter: the segmenter's largest region (segment.animal_regions), nothing else;
* predictor: the default pipeline without a segmenter (preprocess.predict_photo, layer-0
  occupancy > 0.5 of pass 2 mapped back to the photo), what shipped before the segmenter;
* pipeline: preprocess.predict_photo with the segmenter, the default now: the segmenter's largest
  region that agrees with the predictor (preprocess.MIN_AGREEMENT), else the predictor's mask.

Also: the 25 landscape photos of .cache/backgrounds through predict_photo with the segmenter
(each should say "no animal found"), and how chelsea's mask is chosen.

    python benchmarks/bench_segment.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LIMIT_S = 0.5
PHOTOS = os.path.join(ROOT, ".cache", "photos")
BACKGROUNDS = os.path.join(ROOT, ".cache", "backgrounds")
RENDER_SEEDS = (7, 8)


def machine() -> str:
    from benchmarks.bench_predictor import machine as predictor_machine

    return predictor_machine()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def quokka() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, ImageDraw

    from dualpm_addon import image_io

    rgb = image_io.read_photo(os.path.join(PHOTOS, "quokka.jpg")).rgb
    with open(os.path.join(PHOTOS, "quokka_annotations.json")) as f:
        poly = [(p["x"], p["y"]) for p in json.load(f)["polygons"][0]["keypoints"]]
    im = Image.new("L", (rgb.shape[1], rgb.shape[0]), 0)
    ImageDraw.Draw(im).polygon(poly, fill=255)
    return rgb, np.asarray(im) > 127


def renders(folder: str, seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = os.path.join(folder, f"seed{seed}")
    subprocess.run([sys.executable, "-m", "dualpm_addon.cli", "synth", "--out", out, "--count", str(count),
                    "--seed", str(seed), "--closeup-probability", "0", "--workers", "1"],
                   cwd=ROOT, check=True, capture_output=True)
    items = []
    for f in sorted(glob.glob(os.path.join(out, "*.npz"))):
        with np.load(f, allow_pickle=False) as z:
            items.append((z["rgb"], z["mask"]))
    return items


def compare(name: str, items, runner, seg) -> list[dict]:
    from dualpm_addon import preprocess, segment
    from dualpm_addon.errors import DualPMError

    got = {"segmenter": [], "predictor": [], "pipeline": []}
    fallbacks = 0
    for rgb, true in items:
        regions = segment.animal_regions(seg.mask(rgb))
        got["segmenter"].append(iou(regions[0], true) if regions else 0.0)
        for key, kwargs in (("predictor", {}), ("pipeline", {"segmenter": seg})):
            try:
                r = preprocess.predict_photo(runner, rgb, **kwargs)
            except DualPMError:  # the animal was missed: nothing of it is masked
                got[key].append(0.0)
                continue
            got[key].append(iou(r["photo_mask"], true))
            fallbacks += key == "pipeline" and str(r["mask_source"]) == "predictor"
    rows = []
    for key, values in got.items():
        rows.append({"name": f"{name}: {key} mask IoU (mean of {len(values)})",
                     "value": round(float(np.mean(values)), 3),
                     "unit": "IoU", "median": round(float(np.median(values)), 3),
                     "below_0.5": int(sum(v < 0.5 for v in values))})
    if len(items) > 1:
        rows.append({"name": f"{name}: pipeline fell back to the predictor's mask", "value": fallbacks,
                     "unit": "photos", "of": len(items)})
    return rows


def latency(segs: dict, rgb: np.ndarray, n: int) -> dict:
    """Wall-clock and CPU seconds (this process, all threads) of Segmenter.mask per thread count,
    after warm-up; the settings take turns so a change in the machine's load hits them alike."""
    for seg in segs.values():
        seg.mask(rgb)
        seg.mask(rgb)
    out = {k: ([], []) for k in segs}
    for _ in range(n):
        for k, seg in segs.items():
            t, c = time.perf_counter(), time.process_time()
            seg.mask(rgb)
            out[k][0].append(time.perf_counter() - t)
            out[k][1].append(time.process_time() - c)
    return out


def run(quick: bool = False) -> list[dict]:
    from dualpm_addon import image_io, preprocess, segment
    from dualpm_addon.errors import DualPMError
    from dualpm_addon.inference import Runner, default_model_path

    seg = segment.load()
    runner = Runner(default_model_path(), device="cpu")
    common = {"machine": machine(), "segmenter": os.path.relpath(seg.path, ROOT)}
    rows = []
    q_rgb, q_true = quokka()
    load = os.getloadavg()[0]
    default = segment.default_threads()
    segs = {default: seg, **{t: segment.load(threads=t) for t in (1, 2) if t != default}}
    for threads, (wall, cpu) in sorted(latency(segs, q_rgb, 3 if quick else 10).items()):
        med = statistics.median(wall)
        label = "default, " if threads == default else ""
        size = f"{q_rgb.shape[1]}x{q_rgb.shape[0]}"
        row = {"name": f"segmenter latency, {size} photo, {label}{threads} thread(s) (median)",
               "value": round(med, 3), "unit": "s", "min": round(min(wall), 3),
               "p90": round(float(np.percentile(wall, 90)), 3), "cpu_s": round(statistics.median(cpu), 3),
               "load_average": round(load, 2), "threads": threads, **common}
        if threads == default:
            row.update(limit=LIMIT_S, **{"pass": med <= LIMIT_S})
        rows.append(row)
    rows += compare("quokka", [(q_rgb, q_true)], runner, seg)
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        for seed in RENDER_SEEDS[:1] if quick else RENDER_SEEDS:
            rows += compare(f"renders seed {seed}", renders(tmp, seed, 12 if quick else 60), runner, seg)
    chelsea = image_io.read_photo(os.path.join(PHOTOS, "chelsea.png")).rgb
    r = preprocess.predict_photo(runner, chelsea, segmenter=seg, source="chelsea.png")
    rows.append({"name": f"chelsea: mask from the {r['mask_source']}", "value": round(float(r["photo_mask"].mean()), 3),
                 "unit": "of photo", "animals_found": int(r["animals_found"])})
    landscapes = sorted(glob.glob(os.path.join(BACKGROUNDS, "**", "*.jpg"), recursive=True))
    if quick:
        landscapes = landscapes[:6]
    for label, kwargs in (("predictor alone", {}), ("segmenter on", {"segmenter": seg})):
        refused = 0
        for path in landscapes:
            try:
                preprocess.predict_photo(runner, image_io.read_photo(path).rgb, source=path, **kwargs)
            except DualPMError as e:
                refused += str(e).startswith("no animal found")
        rows.append({"name": f"landscapes refused (no animal found, {label})", "value": refused, "unit": "photos",
                     "of": len(landscapes), "pass": refused == len(landscapes)})
    for row in rows:
        row.setdefault("machine", common["machine"])
    return rows


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
