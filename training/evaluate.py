"""`dualpm eval --model FILE.onnx --data DIR --json REPORT`: the predictor's figures on held-out data.

Runs the ONNX model with ONNX Runtime (what ships), on every .npz sample of DIR that training
never saw: whole species (`dataset.HELD_OUT_SPECIES`, deer and wolf) and held-out clips of the
seen species (`dataset.HELD_OUT_CLIPS`). Samples of the training split found in DIR are skipped.
Each sample is evaluated twice: without a mask input (128 everywhere: the network finds the
animal itself) and with the true mask given. Figures (dualpm_addon.metrics): PCK@0.1 of Q on
visible pixels, amodal Chamfer in cm (raw, and aligned by translation + scale), both at horse
scale (distances times horse body length / the species' body length) and in the species' own
size, mask IoU, per-layer figures; per split, per species and beside the targets of issue 4.
Where samples carry their joints (every `dualpm synth` sample), each fit of FIT_MODES runs on
the predicted map (both mask inputs) and on the true maps (what a perfect predictor would give),
with two figures: joint error, against the sample's own joints after translation + scale
alignment, in % of body length; and rig IoU, the fitted surface rasterized through the render's
camera against the true layer-0 mask (metrics.rig_iou: what the artist sees through the scene's
camera). Modes: "p_only", the skeleton fit on the kept points as they are (its figures are the
unprefixed fit_joint_error_pct and rig_iou of each summary), and "pipeline", what `dualpm
reconstruct` runs (fit_camera, then the fit); every mode's under "fits". Per split and species;
with --photos also the quokka's rig IoU against its outline.
Also writes a report picture (REPORT with .png, or --png): for a few samples the photo, true and
predicted masks, true and predicted Q as colours, and the true and predicted amodal clouds from
the side (a novel view).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from dualpm_addon import metrics
from dualpm_addon.errors import DualPMError

TARGETS = {
    "heldout_clips": {"pck": (">=", 0.85), "chamfer_cm_horse_scale": ("<=", 5.0), "mask_iou": (">=", 0.9)},
    "unseen_species": {"pck": (">=", 0.70)},
}
OUTPUTS = ("P", "Q", "occupancy", "confidence")


def add_arguments(p):
    p.add_argument("--model", required=True, help="the .onnx model")
    p.add_argument("--data", required=True, help="folder of .npz samples (dualpm synth)")
    p.add_argument("--json", required=True, help="the report to write")
    p.add_argument("--png", help="the report picture (default: REPORT with .png)")
    p.add_argument("--templates", default=".cache/templates", help="baked templates (body lengths for horse scale)")
    p.add_argument("--max-per-split", type=int, default=0, help="evaluate at most this many samples per split (0: all)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--include-train", action="store_true", help="also evaluate samples of the training split (a sanity check)")
    p.add_argument("--photos", help="folder with real photos (chelsea.png, quokka.jpg + quokka_annotations.json): "
                   "run through dualpm_addon.preprocess, quokka mask IoU against its outline polygon, previews")


def body_lengths(templates_dir: str, species: set[str]) -> dict[str, float]:
    from dualpm_addon import template

    out = {}
    for s in species:
        path = os.path.join(templates_dir, f"{s}.npz")
        if os.path.isfile(path):
            out[s] = template.load(path).body_length
    return out


def session(model: str, threads: int = 0):
    import onnxruntime as ort

    if not os.path.isfile(model):
        raise DualPMError(f"--model {model}: no such file")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    prov = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(model, opts, providers=prov)
    except Exception as e:  # onnxruntime raises its own exception types
        raise DualPMError(f"--model {model}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None


def check(value: float, rule: tuple) -> bool:
    op, target = rule
    return bool(np.isfinite(value) and (value >= target if op == ">=" else value <= target))


def with_targets(split_name: str, summary: dict) -> dict:
    out = {}
    for key, rule in TARGETS.get(split_name, {}).items():
        v = summary.get(key, float("nan"))
        out[key] = {"value": v, "target": f"{rule[0]} {rule[1]}", "met": check(v, rule)}
    return out


def _summary(rows: list[dict]) -> dict:
    s = metrics.summarise([r["own"] for r in rows])
    horse = metrics.summarise([r["horse"] for r in rows])
    s["chamfer_cm_horse_scale"] = horse["chamfer_cm"]
    s["chamfer_aligned_cm_horse_scale"] = horse["chamfer_aligned_cm"]
    return _with_fits(s, summarise_fits(r.get("fits") for r in rows))


def sample_joints(path: str):
    """(joints (J,3) camera space, names) of a sample, or None for samples written without them."""
    with np.load(path, allow_pickle=False) as z:
        if "joints" not in z.files or "joint_names" not in z.files:
            return None
        return np.asarray(z["joints"], np.float64), tuple(str(n) for n in z["joint_names"])


# -- fits: the skeleton fits measured on every map ---------------------------------------------

def fit_p_only(maps: dict, sample: dict, context, exact: bool = False):
    """Today's fit (fitting.fit on the kept points' P and Q, nothing from the photo), in the
    map's own camera: the SkeletonFit, or None where the pipeline would find no animal or the fit
    refuses the points. A predicted map is fitted with `dualpm reconstruct`'s thresholds and
    fitting.PREDICTED_POSE_WEIGHT; an `exact` (true) map keeps every occupied point, its
    confidence carrying nothing, with the fit's default options."""
    from dualpm_addon import fitting, pipeline, pointmap

    pts = pointmap.extract_points(maps, pointmap.OCCUPANCY_THRESHOLD,
                                  -np.inf if exact else pointmap.CONFIDENCE_THRESHOLD)
    if len(pts["P"]) < pipeline.MIN_POINTS:
        return None
    options = fitting.FitOptions(pose_weight=fitting.FitOptions.pose_weight if exact
                                 else fitting.PREDICTED_POSE_WEIGHT)
    try:
        return fitting.fit(pts["P"], pts["Q"], context, options)
    except DualPMError:
        return None


def fit_pipeline(maps: dict, sample: dict, context, exact: bool = False, fit: str = "photo", photo_mask=None):
    """What `dualpm reconstruct` does after inference (pipeline.from_pointmap: fit_camera moves the
    cloud onto its pixels, then the fit with its settings), the render's focal length taken as
    known, as a photo's EXIF gives it. The fit lies in the camera the rig is seen through, which
    is the photo's own (the map covers the whole render), so its rig IoU is what the user sees.
    An `exact` map keeps every occupied point with the fit's default pose prior."""
    from dualpm_addon import fitting, pipeline

    size = np.asarray(maps["P"]).shape[1:3]
    pm = dict(maps, crop_box=np.array([0.0, 0.0, size[1], size[0]]), photo_size=np.array(size),
              focal_from_exif=True)
    if photo_mask is not None:
        pm["photo_mask"] = photo_mask
    # The fit's figures only: the character (its shape solve and bake, about 1 s, made after the
    # fit and changing nothing in it) is not made.
    settings = (pipeline.Settings(confidence_threshold=-np.inf, pose_weight=fitting.FitOptions.pose_weight, fit=fit,
                                  character="template")
                if exact else pipeline.Settings(fit=fit, character="template"))
    photo = pipeline.PhotoInput(np.asarray(sample["rgb"]), None, None, "render")
    try:
        return pipeline.from_pointmap(pm, photo, template=context.template, settings=settings).fit
    except DualPMError:
        return None


def fit_points_pipeline(maps: dict, sample: dict, context, exact: bool = False):
    """The pipeline as it was before the photo fit: fit_camera, then the 3D fit alone."""
    return fit_pipeline(maps, sample, context, exact, fit="points")


def fit_photo_segmenter(maps: dict, sample: dict, context, exact: bool = False):
    """The photo fit with the segmenter's mask of the render (what a user gets without a mask)."""
    from dualpm_addon import pipeline, segment

    segmenter = pipeline.load_segmenter("auto")[0]
    if segmenter is None:
        return None
    regions = segment.animal_regions(segmenter.mask(np.asarray(sample["rgb"])))
    return fit_pipeline(maps, sample, context, exact, photo_mask=regions[0] if regions else None)


def fit_photo_true_mask(maps: dict, sample: dict, context, exact: bool = False):
    """The photo fit with the render's true mask (what a user gets who gives --mask)."""
    return fit_pipeline(maps, sample, context, exact, photo_mask=np.asarray(sample["mask"], bool))


# The fits `dualpm eval` measures, each on every predicted map (both mask inputs) and on the true
# maps: name -> fn(maps, sample, context, exact) -> SkeletonFit (camera space of the map, whose
# grid is the whole render) or None when it found nothing. maps: P, Q, occupancy, confidence and
# intrinsics; sample: the render (dataset.load_sample: rgb, mask = the true layer-0 mask,
# intrinsics) plus `mask_given`, whether the network was given the true mask; context:
# fitting.prepare(). A new fit is one more line here; "p_only" stays first, the figures
# without a prefix are its.
FIT_MODES = {
    "p_only": fit_p_only,
    "pipeline_points": fit_points_pipeline,
    "pipeline": fit_pipeline,
    "photo_segmenter": fit_photo_segmenter,
    "photo_true_mask": fit_photo_true_mask,
}
FIGURE_MODE = "p_only"  # the mode behind fit_joint_error_pct and rig_iou at the top of each summary


def true_map(sample: dict) -> dict:
    """A render's exact dual point map as a perfect predictor gives it: P, Q, occupancy (NaN
    outside the animal set to 0), confidence 1 and the render's intrinsics."""
    out = {k: np.nan_to_num(np.asarray(sample[k], np.float32)) for k in ("P", "Q", "occupancy")}
    out.update(confidence=np.ones_like(out["occupancy"]), intrinsics=sample["intrinsics"])
    return out


def fit_figures(fit, joints, body_length: float, true_mask: np.ndarray, intrinsics: np.ndarray) -> dict:
    """A fit's joint error (% of body length, metrics.joint_error_pct) and rig IoU (its posed
    surface through the render's intrinsics against the true mask); NaN for a failed fit."""
    if fit is None:
        return {"fit_joint_error_pct": float("nan"), "rig_iou": float("nan")}
    return {"fit_joint_error_pct": metrics.joint_error_pct(fit.joints, fit.joint_names, joints[0], joints[1],
                                                           body_length),
            "rig_iou": metrics.rig_iou(fit.posed_vertices, fit.faces, intrinsics, true_mask)}


def fit_joint_error(maps: dict, joints, body_length: float, context, exact: bool = False) -> float:
    """fit_p_only's joint error in % of body length against the sample's own joints; NaN where
    it found no animal or the fit refused the points."""
    fit = fit_p_only(maps, {}, context, exact)
    if fit is None:
        return float("nan")
    return metrics.joint_error_pct(fit.joints, fit.joint_names, joints[0], joints[1], body_length)


def run_fits(maps: dict, sample: dict, joints, body_length: float, context, exact: bool = False,
             mask_given: bool = False) -> dict:
    """{mode: fit_figures} for every FIT_MODES entry."""
    mask = np.asarray(sample["mask"], bool) if "mask" in sample else np.asarray(maps["occupancy"])[0] > 0.5
    ev = dict(sample, mask=mask, mask_given=mask_given)
    return {name: fit_figures(fn(maps, ev, context, exact), joints, body_length, mask, maps["intrinsics"])
            for name, fn in FIT_MODES.items()}


def summarise_fits(per_sample) -> dict:
    """Per mode over samples: fit_joint_error_pct and fit_failures (metrics.summarise_fit) and
    rig_iou, the mean over the fits that worked."""
    per_sample = [f for f in per_sample if f]
    if not per_sample:
        return {}
    out = {}
    for name in per_sample[0]:
        rows = [f[name] for f in per_sample]
        s = metrics.summarise_fit(r["fit_joint_error_pct"] for r in rows)
        iou = np.array([r["rig_iou"] for r in rows], np.float64)
        s["rig_iou"] = float(iou[np.isfinite(iou)].mean()) if np.isfinite(iou).any() else float("nan")
        out[name] = s
    return out


def _with_fits(summary: dict, fits: dict) -> dict:
    """summary plus the FIGURE_MODE's rig_iou at the top and every mode under "fits"."""
    if fits:
        summary["rig_iou"] = fits[FIGURE_MODE]["rig_iou"]
        summary["fits"] = fits
    return summary


def evaluate_files(sess, files_by_split: dict, lengths: dict, batch: int = 4, progress=True):
    from dualpm_addon import fitting
    from training.dataset import load_sample, mask_input, sample_meta

    context = fitting.prepare()

    results, shown = {}, []
    total = sum(len(v) for v in files_by_split.values())
    done, t0 = 0, time.time()
    for split_name, files in files_by_split.items():
        rows = {"no_mask": [], "mask_given": []}
        species_rows: dict = {"no_mask": {}, "mask_given": {}}
        true_fit = []  # the same fits on the true maps: what a perfect predictor would give
        species_true: dict = {}
        for i in range(0, len(files), batch):
            chunk = files[i:i + batch]
            samples = [load_sample(f) for f in chunk]
            metas = [sample_meta(f) for f in chunk]
            joints = [sample_joints(f) for f in chunk]
            image = np.stack([s["rgb"] for s in samples]).astype(np.uint8)
            for mode in ("no_mask", "mask_given"):
                mask = np.stack([mask_input(np.asarray(s["mask"], bool), mode == "mask_given") for s in samples])
                outs = dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {"image": image, "mask": mask})))
                for j, (s, m) in enumerate(zip(samples, metas)):
                    pred = {k: outs[k][j] for k in OUTPUTS}
                    true = true_map(s)
                    length = lengths.get(m["species"], metrics.REFERENCE_BODY_LENGTH)
                    scale = metrics.REFERENCE_BODY_LENGTH / length
                    own = metrics.evaluate(pred, true)
                    fits = {}
                    if joints[j] is not None:
                        fits = run_fits(dict(pred, intrinsics=s["intrinsics"]), s, joints[j], length, context,
                                        mask_given=mode == "mask_given")
                        own["fit_joint_error_pct"] = fits[FIGURE_MODE]["fit_joint_error_pct"]
                        if mode == "no_mask":
                            tf = run_fits(true, s, joints[j], length, context, exact=True)
                            true_fit.append(tf)
                            species_true.setdefault(m["species"], []).append(tf)
                    horse = dict(own, chamfer_cm=own["chamfer_cm"] * scale,
                                 chamfer_aligned_cm=own["chamfer_aligned_cm"] * scale)
                    row = {"own": own, "horse": horse, "species": m["species"], "clip": m["clip"], "fits": fits}
                    rows[mode].append(row)
                    species_rows[mode].setdefault(m["species"], []).append(row)
                    if mode == "no_mask":
                        if len(shown) < 6 and (not shown or shown[-1][0] != split_name or len(shown) < 3):
                            shown.append((split_name, s, pred, own))
            done += len(chunk)
            if progress:
                print(f"\rdualpm eval: {done}/{total} samples, {time.time() - t0:.0f} s", end="", file=sys.stderr)
        if not files:
            continue
        summary = {mode: _summary(r) for mode, r in rows.items() if r}
        if true_fit:
            fits = summarise_fits(true_fit)
            summary["true_maps"] = _with_fits(dict(fits[FIGURE_MODE]), fits)
        per_species = {}
        for sp, r in sorted(species_rows["no_mask"].items()):
            per_species[sp] = {k: v for k, v in _summary(r).items() if k != "layers"}
            given = species_rows["mask_given"].get(sp)
            if given and any(x["fits"] for x in given):
                per_species[sp]["mask_given"] = _with_fits({}, summarise_fits(x["fits"] for x in given))
            if sp in species_true:
                fits = summarise_fits(species_true[sp])
                per_species[sp]["true_maps"] = _with_fits(dict(fits[FIGURE_MODE]), fits)
        results[split_name] = {
            "samples": len(files),
            **summary,
            "per_species": per_species,
            "targets_no_mask": with_targets(split_name, summary["no_mask"]),
            "targets_mask_given": with_targets(split_name, summary["mask_given"]),
        }
    if progress:
        print(file=sys.stderr)
    return results, shown


# -- the report picture --------------------------------------------------------------------------

def q_colours(q: np.ndarray) -> np.ndarray:
    """Canonical points as colours: the horse's canonical box mapped to RGB."""
    lo = np.array([-0.35, -1.3, 0.0])
    hi = np.array([0.35, 1.3, 2.1])
    return (np.clip((q - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def side_view(points: np.ndarray, colours: np.ndarray, size: int = 160, centre=None, extent=None) -> np.ndarray:
    """Camera-space points seen from the camera's right (looking along -x): z across, -y up."""
    img = np.full((size, size, 3), 255, np.uint8)
    if len(points) == 0:
        return img
    c = np.median(points, 0) if centre is None else centre
    e = float(np.percentile(np.abs(points - c), 99) * 2.4 + 1e-6) if extent is None else extent
    u = ((points[:, 2] - c[2]) / e + 0.5) * size
    v = ((points[:, 1] - c[1]) / e + 0.5) * size
    order = np.argsort(points[:, 0])[::-1]  # far (large x seen from the right? draw nearest last)
    u, v, col = u[order].astype(int), v[order].astype(int), colours[order]
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    img[v[ok], u[ok]] = col[ok]
    return img


def report_picture(shown: list, path: str) -> None:
    from PIL import Image, ImageDraw

    tile = 160
    cols = 7
    head = 16
    canvas = Image.new("RGB", (cols * tile, len(shown) * (tile + head) + head), "white")
    draw = ImageDraw.Draw(canvas)
    titles = ["photo", "true mask", "pred occupancy", "true Q0", "pred Q0", "true cloud (side)", "pred cloud (side, centred)"]
    for c, t in enumerate(titles):
        draw.text((c * tile + 4, 2), t, fill="black")
    for r, (split_name, s, pred, fig) in enumerate(shown):
        y = head + r * (tile + head)
        tocc = np.asarray(s["occupancy"]) > 0.5
        keep = metrics.kept(pred)
        tq = np.where(tocc[0][..., None], q_colours(np.nan_to_num(s["Q"][0])), 255).astype(np.uint8)
        pq = np.where((pred["occupancy"][0] > 0.5)[..., None], q_colours(pred["Q"][0]), 255).astype(np.uint8)
        tp, pp = np.nan_to_num(np.asarray(s["P"]))[tocc], pred["P"][keep]
        centre = np.median(tp, 0) if len(tp) else None
        extent = float(np.percentile(np.abs(tp - centre), 99) * 2.4 + 1e-6) if len(tp) else None
        tiles = [
            np.asarray(s["rgb"], np.uint8),
            np.repeat((tocc[0] * 255).astype(np.uint8)[..., None], 3, -1),
            np.repeat((np.clip(pred["occupancy"][0], 0, 1) * 255).astype(np.uint8)[..., None], 3, -1),
            tq, pq,
            side_view(tp, q_colours(np.nan_to_num(np.asarray(s["Q"]))[tocc]), tile, centre, extent),
            # centred on its own median: the distance error would move it out of the tile
            side_view(pp, q_colours(pred["Q"][keep]), tile, None, extent),
        ]
        for c, t in enumerate(tiles):
            canvas.paste(Image.fromarray(t), (c * tile, y))
        draw.text((4, y + tile + 2), f"{split_name}: PCK {fig['pck']:.2f}  IoU {fig['mask_iou']:.2f}  "
                  f"Chamfer {fig['chamfer_cm']:.1f} cm (aligned {fig['chamfer_aligned_cm']:.1f})", fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.new("L", (width, height), 0)
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(im) > 127


def photo_reconstruction(pm: dict, photo, mask, name: str):
    """The pipeline's reconstruction of a photo's predicted map (pipeline.from_pointmap, as
    `dualpm reconstruct` runs it after inference), or None where it finds no animal."""
    from dualpm_addon import pipeline

    try:
        return pipeline.from_pointmap(pm, pipeline.PhotoInput(photo.rgb, mask, photo.focal_mm, name))
    except DualPMError:
        return None


def photo_look(model: str, folder: str, out_dir: str) -> dict:
    """Real photos through the shipped path (image_io + preprocess + inference.Runner): for each
    photo the crop, predicted occupancy and the kept points from the side; for the quokka the mask
    IoU against its annotated outline (in the crop's grid, the true mask cropped the same way),
    and the rig IoU of the reconstruction's fitted surface through the photo's camera against the
    outline at the photo's size, without and with the outline given as the mask input, with the
    overlay picture (preview.overlay) of the first."""
    from PIL import Image

    from dualpm_addon import image_io, preprocess
    from dualpm_addon.inference import Runner

    runner = Runner(model, device="cpu")
    out = {}
    for name in ("chelsea.png", "quokka.jpg"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        photo = image_io.read_photo(path)
        try:
            r = preprocess.predict_photo(runner, photo.rgb, None, photo.focal_mm, name)
        except DualPMError as e:
            out[name] = {"error": str(e)}
            continue
        keep = metrics.kept(r)
        fig = {"points_kept": int(keep.sum()), "crop_box": [float(v) for v in r["crop_box"]],
               "occupied_pixels_layer0": int((r["occupancy"][0] > 0.5).sum())}
        ann = os.path.join(folder, "quokka_annotations.json")
        if name == "quokka.jpg" and os.path.isfile(ann):
            with open(ann) as f:
                poly = json.load(f)["polygons"][0]["keypoints"]
            h, w = photo.rgb.shape[:2]
            true = polygon_mask([(p["x"], p["y"]) for p in poly], h, w)
            true_grid = preprocess.crop_resize_mask(true, tuple(r["crop_box"]), r["occupancy"].shape[-1]) > 127
            fig["mask_iou"] = metrics.mask_iou(r["occupancy"][0] > 0.5, true_grid)
            # the same, with the true mask given as the network's mask input
            rm = preprocess.predict_photo(runner, photo.rgb, true, photo.focal_mm, name)
            true_grid_m = preprocess.crop_resize_mask(true, tuple(rm["crop_box"]), rm["occupancy"].shape[-1]) > 127
            fig["mask_iou_mask_given"] = metrics.mask_iou(rm["occupancy"][0] > 0.5, true_grid_m)
            # what the user gets: the rig `dualpm reconstruct` fits, seen through the photo's camera
            for key, maps, given in (("rig_iou", r, None), ("rig_iou_mask_given", rm, true)):
                rec = photo_reconstruction(maps, photo, given, name)
                fig[key] = (float("nan") if rec is None else
                            metrics.rig_iou(rec.fit.posed_vertices, rec.fit.faces, rec.photo_intrinsics, true))
                if rec is not None and given is None:
                    from dualpm_addon import preview

                    over = os.path.join(out_dir, f"photo_{os.path.splitext(name)[0]}_overlay.png")
                    os.makedirs(out_dir, exist_ok=True)
                    Image.fromarray(preview.overlay(photo.rgb, rec, min(480, photo.rgb.shape[0]))).save(over)
                    fig["overlay_picture"] = over
        pts, cols = r["P"][keep], np.asarray(r["rgb"])[np.nonzero(keep)[1], np.nonzero(keep)[2]]
        tiles = [np.asarray(r["rgb"], np.uint8),
                 np.repeat((np.clip(r["occupancy"][0], 0, 1) * 255).astype(np.uint8)[..., None], 3, -1),
                 np.where((r["occupancy"][0] > 0.5)[..., None], q_colours(r["Q"][0]), 255).astype(np.uint8),
                 side_view(pts, cols, 160)]
        pic = os.path.join(out_dir, f"photo_{os.path.splitext(name)[0]}.png")
        os.makedirs(out_dir, exist_ok=True)
        Image.fromarray(np.concatenate(tiles, 1)).save(pic)
        fig["picture"] = pic
        out[name] = fig
    return out


def _fig(x, fmt: str) -> str:
    return format(x, fmt) if x is not None and np.isfinite(x) else "-"


def fit_table(split: dict) -> list[str]:
    """The fit figures of one split's results, one row per fit mode and one per species: joint
    error (%) and rig IoU without a mask input, with the true mask given, and on the true maps."""
    cols = [("no_mask", split.get("no_mask", {})), ("mask_given", split.get("mask_given", {})),
            ("true_maps", split.get("true_maps", {}))]
    head = "  ".join(f"{c:>18s}" for c, _ in cols)
    lines = [f"  {'fit':<22s}{head}", f"  {'':<22s}" + "  ".join(f"{'joint %':>9s}{'rig IoU':>9s}" for _ in cols)]

    def row(label, figures):
        cells = []
        for f in figures:
            cells.append(f"{_fig(f.get('fit_joint_error_pct'), '.1f'):>9s}{_fig(f.get('rig_iou'), '.3f'):>9s}")
        return f"  {label:<22s}" + "  ".join(cells)

    for mode in FIT_MODES:
        lines.append(row(mode, [c.get("fits", {}).get(mode, {}) for _, c in cols]))
    for sp, fig in split.get("per_species", {}).items():
        for mode in FIT_MODES:
            lines.append(row(f"{sp} {mode}", [fig.get("fits", {}).get(mode, {}),
                                               fig.get("mask_given", {}).get("fits", {}).get(mode, {}),
                                               fig.get("true_maps", {}).get("fits", {}).get(mode, {})]))
    return lines


def finite_json(x):
    """NaN and inf as null: strict JSON."""
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def run(args) -> int:
    from training.dataset import list_samples, sample_meta, split_of

    files = list_samples(args.data)
    by_split = {"heldout_clips": [], "unseen_species": []}
    if args.include_train:
        by_split["train"] = []
    species = set()
    for f in files:
        m = sample_meta(f)
        sp = split_of(m)
        if sp in by_split:
            by_split[sp].append(f)
            species.add(m["species"])
    if args.max_per_split:
        by_split = {k: v[: args.max_per_split] for k, v in by_split.items()}
    if not any(by_split.values()):
        raise DualPMError(f"--data {args.data}: no held-out samples (species {', '.join(sorted(species)) or 'none'})")
    sess = session(args.model, args.threads)
    lengths = body_lengths(args.templates, species)
    t0 = time.time()
    results, shown = evaluate_files(sess, by_split, lengths, args.batch)
    meta = sess.get_modelmeta().custom_metadata_map
    report = {"model": args.model, "model_version": meta.get("model_version", ""), "data": args.data,
              "held_out_species": sorted({"deer", "wolf"}), "seconds": round(time.time() - t0, 1),
              "providers": sess.get_providers(), "splits": results}
    png = args.png or os.path.splitext(args.json)[0] + ".png"
    report["picture"] = png
    if args.photos:
        report["photos"] = photo_look(args.model, args.photos, os.path.dirname(os.path.abspath(png)))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(finite_json(report), f, indent=1)
    if shown:
        report_picture(shown, png)
    for name, r in results.items():
        nm = r["no_mask"]
        print(f"{name}: {r['samples']} samples  PCK {nm['pck']:.3f}  IoU {nm['mask_iou']:.3f}  "
              f"Chamfer {nm['chamfer_cm_horse_scale']:.2f} cm (aligned {nm['chamfer_aligned_cm_horse_scale']:.2f}) "
              f"at horse scale"
              + (f"  fit joint error {nm['fit_joint_error_pct']:.1f} % of body length "
                 f"({r['true_maps']['fit_joint_error_pct']:.1f} % on the true maps)" if "true_maps" in r else ""),
              file=sys.stderr)
        if "true_maps" in r:
            for line in fit_table(r):
                print(line, file=sys.stderr)
    for name, fig in report.get("photos", {}).items():
        if "rig_iou" in fig:
            print(f"{name}: rig IoU {fig['rig_iou']:.3f} (the true mask given to the network: "
                  f"{fig.get('rig_iou_mask_given', float('nan')):.3f})", file=sys.stderr)
    return 0
