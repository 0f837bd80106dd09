"""The character's shape against the true surface, its mesh quality, density and speed.

Samples: the eval renders (.cache/synth/eval/heldout_clips and unseen_species, the first N of
each), every one through `dualpm reconstruct`'s bpy-free half after inference
(pipeline.from_pointmap with the render's true mask as the user's mask and the render's focal
length as EXIF gives it), once on the exact dual point map (a perfect predictor) and once on the
shipped predictor's map (assets/dualpm.onnx in process, the mask given to it as well).

Shape: Chamfer distance (metrics.chamfer_cm: mean of the two directed mean nearest distances,
20,000 points sampled uniformly by area on each surface) between the character posed by the fit
in the photo's camera and the true surface, the sample's own species template posed as the
render was (its rotations, root translation and offsets, model_to_world, extrinsics); horse
scale (times the horse's body length over the species'). "camera": as placed, no alignment;
"aligned": after metrics.align (centroids and RMS radii matched, the project's definition). The
same run measures the undeformed character (the fit's instance rest shape) and the deformed one
(character.build); the ratio is after / before, the target at most 0.70. "in frame" repeats it
on the samples whose animal does not touch the render's border (a cut animal's hidden half is in
the true surface but in no evidence).

Quality: self-intersections (character.quality, the exact search) of the undeformed and deformed
rest meshes, manifold, weights. Density: the same on exact maps with the template subdivided 0,
1 and 2 times. Speed: deform wall and CPU seconds per reconstruction (the 2-core machine is
shared: CPU time grows less with the load than wall time), and the character mesh's first load.

    python benchmarks/bench_character_shape.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import glob
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SPLITS = ("heldout_clips", "unseen_species")
TARGET_RATIO = 0.70
SAMPLES = 20000


def true_surface(sample: dict, templates_dir: str):
    """(vertices (V, 3) camera space, faces, body length) of the species' template as rendered."""
    from dualpm_addon import template

    t = template.load(os.path.join(templates_dir, f"{sample['species']}.npz"))
    v = t.pose_vertices(np.asarray(sample["rotations"], np.float64), np.asarray(sample["root_translation"], np.float64),
                        np.asarray(sample["offsets"], np.float64))
    m2w, w2c = np.asarray(sample["model_to_world"], np.float64), np.asarray(sample["extrinsics"], np.float64)
    v = v @ m2w[:3, :3].T + m2w[:3, 3]
    return v @ w2c[:3, :3].T + w2c[:3, 3], np.asarray(t.faces), t.body_length


def predicted_map(session, sample: dict) -> dict:
    names = ("P", "Q", "occupancy", "confidence")
    mask = np.where(np.asarray(sample["mask"], bool), 255, 0).astype(np.uint8)[None]
    outs = session.run(list(names), {"image": np.asarray(sample["rgb"], np.uint8)[None], "mask": mask})
    return dict({k: o[0] for k, o in zip(names, outs)}, intrinsics=sample["intrinsics"])


def reconstruct(maps: dict, sample: dict, exact: bool):
    """pipeline.from_pointmap as `dualpm reconstruct --mask` runs it after inference (no bake)."""
    from dualpm_addon import fitting, pipeline

    size = np.asarray(maps["P"]).shape[1:3]
    pm = dict(maps, crop_box=np.array([0.0, 0.0, size[1], size[0]]), photo_size=np.array(size), focal_from_exif=True,
              photo_mask=np.asarray(sample["mask"], bool))
    settings = pipeline.Settings(character="template")
    if exact:
        settings = pipeline.Settings(confidence_threshold=-np.inf, pose_weight=fitting.FitOptions.pose_weight,
                                     character="template")
    photo = pipeline.PhotoInput(np.asarray(sample["rgb"]), None, None, "render")
    return pipeline.from_pointmap(pm, photo, settings=settings)


def measure(rec, sample: dict, truth: np.ndarray, scale: float, levels: int = 1, quality_check: bool = True) -> dict:
    from dualpm_addon import metrics
    from dualpm_addon.character import deform, load_character, quality, repair

    char = load_character(rec.template, levels=levels)
    before = repair.instance_rest(char, rec.template, rec.fit)
    report_ = {}
    w0, c0 = time.perf_counter(), time.process_time()
    after = deform.build(rec, character=char, report=report_)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out = {"deform_s": wall, "deform_cpu_s": cpu, "point_trust": report_.get("point_trust", float("nan"))}
    mask = np.asarray(sample["mask"], bool)
    for label, mesh in (("before", before), ("after", after)):
        cam = deform.posed(mesh, rec.fit)
        pts = metrics.surface_samples(cam, mesh.faces, SAMPLES)
        out[f"camera_{label}"] = metrics.chamfer_cm(pts, truth, scale=scale)
        out[f"aligned_{label}"] = metrics.chamfer_cm(pts, truth, aligned=True, scale=scale)
        out[f"iou_{label}"] = metrics.rig_iou(cam, mesh.faces, rec.photo_intrinsics, mask)
        if quality_check:
            out[f"crossings_{label}"] = quality.self_intersections(mesh.welded_vertices(), mesh.welded_faces)
    if quality_check:
        out["manifold"] = quality.is_closed_manifold(after.welded_faces)
        out["weights_ok"] = bool(np.allclose(after.skin_weights.sum(axis=1), 1.0, atol=1e-6))
    return out


def _mean(rows, key):
    vals = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def shape_rows(label: str, rows: list[dict]) -> list[dict]:
    out = []
    subsets = (("all", rows), ("in frame", [r for r in rows if not r["cut"]]))
    for subset, rs in subsets:
        if not rs:
            continue
        for metric in ("camera", "aligned"):
            b, a = _mean(rs, f"{metric}_before"), _mean(rs, f"{metric}_after")
            ratio = a / b if b > 0 else float("nan")
            out.append({"name": f"Chamfer {label}, {metric}, {subset} ({len(rs)} renders)", "value": round(a, 3),
                        "unit": "cm", "peer": "undeformed", "peer_value": round(b, 3), "ratio": round(ratio, 3),
                        "target_ratio": TARGET_RATIO, "met": bool(ratio <= TARGET_RATIO),
                        "per_sample_ratio": [round(r[f"{metric}_after"] / r[f"{metric}_before"], 3) for r in rs]})
    b, a = _mean(rows, "iou_before"), _mean(rows, "iou_after")
    out.append({"name": f"rig IoU {label} (true mask)", "value": round(a, 4), "unit": "IoU", "peer": "undeformed",
                "peer_value": round(b, 4), "ratio": round(a / b, 3)})
    if "crossings_after" in rows[0]:
        new = [max(0, r["crossings_after"] - r["crossings_before"]) for r in rows]
        out.append({"name": f"self-intersections {label}, added by the deform (sum)", "value": int(sum(new)),
                    "unit": "crossings", "peer_value": int(sum(r["crossings_before"] for r in rows)),
                    "peer_is": "the undeformed instance rest's own crossings (the fit's), sum",
                    "renders_with_new": int(sum(n > 0 for n in new)),
                    "per_sample": [[int(r["crossings_before"]), int(r["crossings_after"])] for r in rows]})
        clean = all(r["manifold"] and r["weights_ok"] for r in rows)
        out.append({"name": f"manifold and weights sum to 1, {label}", "value": int(clean), "unit": "all (1/0)"})
    wall = [r["deform_s"] for r in rows]
    cpu = [r["deform_cpu_s"] for r in rows]
    out.append({"name": f"deform time {label} (median)", "value": round(float(np.median(wall)), 3), "unit": "s",
                "limit": 0.7, "cpu_s": round(float(np.median(cpu)), 3), "max_s": round(float(np.max(wall)), 3),
                "pass": bool(np.median(cpu) < 0.7), "pass_on": "median CPU time"})
    return out


def run(quick: bool = False, count: int | None = None) -> list[dict]:
    from dualpm_addon import metrics, template
    from dualpm_addon.character import load_character
    from dualpm_addon.character.mesh import topology_and_mesh
    from dualpm_addon.errors import DualPMError

    n = int(count) if count else (2 if quick else 8)
    data = os.path.join(ROOT, ".cache", "synth", "eval")
    templates_dir = os.path.join(ROOT, ".cache", "templates")
    files = [f for s in SPLITS for f in sorted(glob.glob(os.path.join(data, s, "sample_*.npz")))[:n]]
    if not files:
        raise DualPMError(f"{data}: no eval renders (run `bash scripts/setup.sh`)")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(ROOT, "assets", "dualpm.onnx"), opts,
                                   providers=["CPUExecutionProvider"])

    # The character mesh's first load (uncached: a fresh template object), per density.
    rows, density = [], {}
    for levels in (0, 1, 2):
        t = template.load_default()
        t0 = time.perf_counter()
        topo, mesh = topology_and_mesh(t, levels)
        density[levels] = {"load_s": time.perf_counter() - t0, "vertices": mesh.num_vertices,
                           "faces": int(len(mesh.faces))}
    load_character(template.load_default())

    per = {"exact": [], "predicted": []}
    by_level = {0: [], 1: [], 2: []}
    for i, path in enumerate(files):
        with np.load(path, allow_pickle=False) as z:
            sample = {k: z[k] for k in z.files}
        sample["species"] = str(sample["species"])
        tv, tf, blen = true_surface(sample, templates_dir)
        truth = metrics.surface_samples(tv, tf, SAMPLES, seed=1)
        scale = metrics.REFERENCE_BODY_LENGTH / blen
        m = np.asarray(sample["mask"], bool)
        cut = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        for kind in ("exact", "predicted"):
            from training.evaluate import true_map

            maps = true_map(sample) if kind == "exact" else predicted_map(session, sample)
            try:
                rec = reconstruct(maps, sample, kind == "exact")
            except DualPMError as e:
                print(f"  {os.path.basename(path)} {kind}: no reconstruction ({e})", file=sys.stderr)
                continue
            r = measure(rec, sample, truth, scale)
            r.update(cut=cut, species=sample["species"], file=os.path.basename(path))
            per[kind].append(r)
            if kind == "exact":
                for levels in (0, 2) if not quick else (0,):
                    by_level[levels].append(measure(rec, sample, truth, scale, levels=levels, quality_check=False))
                by_level[1].append(r)
        print(f"  {i + 1}/{len(files)} {sample['species']}: exact {per['exact'][-1]['camera_after']:.2f} cm "
              f"(was {per['exact'][-1]['camera_before']:.2f})", file=sys.stderr, flush=True)
    rows += shape_rows("exact maps", per["exact"])
    if per["predicted"]:
        rows += shape_rows("predicted maps", per["predicted"])
    for levels, rs in by_level.items():
        if not rs:
            continue
        d = density[levels]
        rows.append({"name": f"density: {levels} Loop steps ({d['faces']} faces), Chamfer exact maps, camera",
                     "value": round(_mean(rs, "camera_after"), 3), "unit": "cm", "peer": "undeformed",
                     "peer_value": round(_mean(rs, "camera_before"), 3),
                     "ratio": round(_mean(rs, "camera_after") / _mean(rs, "camera_before"), 3),
                     "deform_s": round(float(np.median([r["deform_s"] for r in rs])), 3),
                     "deform_cpu_s": round(float(np.median([r["deform_cpu_s"] for r in rs])), 3),
                     "vertices": d["vertices"], "load_s": round(d["load_s"], 3)})
    rows.append({"name": "character mesh first load (1 Loop step)", "value": round(density[1]["load_s"], 3),
                 "unit": "s", "vertices": density[1]["vertices"], "faces": density[1]["faces"]})
    rows[0]["machine"] = report.machine()
    return rows


if __name__ == "__main__":
    sys.exit(report.main(run, __doc__.splitlines()[0],
                         options={"count": {"type": int, "default": None, "metavar": "N",
                                            "help": "renders per split (default 8, 2 with --quick)"}}))
