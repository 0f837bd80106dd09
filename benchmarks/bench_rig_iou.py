"""Rig IoU on a real photo with a true mask, and the rasterizer's speed.

Rig IoU (metrics.rig_iou): the fitted surface, rasterized through the camera the reconstruction
placed it in, against the true mask: what the artist sees through the scene's camera. The photo:
imgaug's quokka (.cache/photos/quokka.jpg) with its annotated outline polygon
(quokka_annotations.json) as the true mask, through `dualpm reconstruct`'s bpy-free half
(preprocess.predict_photo with the shipped model in process, then pipeline.from_pointmap), once
without a mask input (the segmenter's mask, as `dualpm reconstruct` uses) and once with the
outline given as the mask.

Speed: silhouette.rasterize of the horse template (2,182 faces) and of the same mesh subdivided
once (8,728 faces), posed side-on so the animal fills about half the frame, at 160, 512 and 1024
pixels square; median wall time of repeated runs against the 50 ms a call may take, and the
median CPU time (`cpu_ms` in the JSON: on this shared machine wall time grows with the load, the
single-threaded CPU time does not).

    python benchmarks/bench_rig_iou.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LIMIT_MS = 50.0
SIZES = (160, 512, 1024)


def subdivide(vertices: np.ndarray, faces: np.ndarray):
    """Each triangle into four (edge midpoints shared between neighbours): the same surface."""
    f = np.asarray(faces, np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    mid = len(vertices) + inv.reshape(3, -1).T  # (F, 3): midpoints of edges 01, 12, 20
    v = np.concatenate([vertices, 0.5 * (vertices[uniq[:, 0]] + vertices[uniq[:, 1]])])
    a, b, c = f.T
    ab, bc, ca = mid.T
    return v, np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])


def side_on(vertices: np.ndarray, size: int):
    from dualpm_addon import camera

    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    w2c = camera.look_at(centre + np.array([4.5, -1.0, 0.6]), centre)
    return vertices @ w2c[:3, :3].T + w2c[:3, 3], camera.intrinsics_from_focal_mm(50.0, size, size)


def time_rasterize(repeats: int) -> list[dict]:
    from dualpm_addon import silhouette, template

    t = template.load_default()
    meshes = {"template": (t.vertices.astype(np.float64), np.asarray(t.faces))}
    meshes["subdivided"] = subdivide(*meshes["template"])
    rows = []
    for name, (v, f) in meshes.items():
        for size in SIZES:
            cam, k = side_on(v, size)
            mask = silhouette.rasterize(cam, f, k, (size, size))
            wall, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                silhouette.rasterize(cam, f, k, (size, size))
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            ms = 1000 * float(np.median(wall))
            rows.append({"name": f"rasterize {name} ({len(f)} faces) {size}x{size}", "value": round(ms, 2),
                         "unit": "ms", "limit": LIMIT_MS, "pass": ms < LIMIT_MS,
                         "cpu_ms": round(1000 * float(np.median(cpu)), 2), "coverage": round(float(mask.mean()), 3)})
    return rows


def quokka_mask(folder: str):
    from dualpm_addon import image_io
    from training.evaluate import polygon_mask

    photo = image_io.read_photo(os.path.join(folder, "quokka.jpg"))
    with open(os.path.join(folder, "quokka_annotations.json")) as f:
        poly = json.load(f)["polygons"][0]["keypoints"]
    h, w = photo.rgb.shape[:2]
    return photo, polygon_mask([(p["x"], p["y"]) for p in poly], h, w)


def quokka_rig_iou(model: str | None = None, folder: str | None = None, picture: str | None = None) -> list[dict]:
    from dualpm_addon import metrics, pipeline, preprocess, preview
    from dualpm_addon.inference import Runner

    folder = folder or os.path.join(ROOT, ".cache", "photos")
    model = model or os.path.join(ROOT, "assets", "dualpm.onnx")
    photo, true = quokka_mask(folder)
    runner = Runner(model, device="cpu")
    version = pipeline.model_version(runner)
    rows = []
    for label, given in (("no mask input", None), ("true mask given", true)):
        t0 = time.perf_counter()
        # Without a mask the reconstruction uses the segmenter, as `dualpm reconstruct` does.
        segmenter = pipeline.load_segmenter("auto")[0] if given is None else None
        pm = preprocess.predict_photo(runner, photo.rgb, given, photo.focal_mm, "quokka.jpg", segmenter=segmenter)
        rec = pipeline.from_pointmap(pm, pipeline.PhotoInput(photo.rgb, given, photo.focal_mm, "quokka.jpg"),
                                     predictor_version=version)
        seconds = time.perf_counter() - t0
        iou = metrics.rig_iou(rec.fit.posed_vertices, rec.fit.faces, rec.photo_intrinsics, true)
        rows.append({"name": f"quokka rig IoU, {label}", "value": round(iou, 3), "unit": "IoU",
                     "model_version": version, "seconds": round(seconds, 2)})
        if picture and given is None:
            preview.write_png(picture, preview.overlay(photo.rgb, rec, 480))
    return rows


def run(quick: bool = False, picture: str | None = None) -> list[dict]:
    rows = quokka_rig_iou(picture=picture)
    rows += time_rasterize(repeats=5 if quick else 30)
    rows[0]["machine"] = report.machine()
    return rows


if __name__ == "__main__":
    sys.exit(report.main(run, __doc__.splitlines()[0],
                         options={"picture": {"default": None, "metavar": "PNG",
                                              "help": "write the quokka's overlay panel here"}}))
