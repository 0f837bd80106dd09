"""Click-to-rig in Blender on the CPU for a 1-megapixel photo, split by stage, and the point cloud
import rate.

Click-to-rig is what Reconstruct from Photo does after the click, with the inference server
already running (it stays up between clicks): load (Blender decodes the JPEG, pixels to numpy),
inference (two passes of the model through the server: find the animal, then its crop), fit
(points, skeleton fit, rest positions), import (the collection: camera, armature, point cloud
with attributes, display and skinning, surface). The first click also pays for starting the
server (reported on its own row). The photo is scikit-image's chelsea scaled to 1224 x 816 (1.0
megapixel) and saved as a JPEG. The model is assets/dualpm.onnx when it exists, else the oracle
model (tests/extension_fixtures.py: the contract's tensors, a fixed horse map as output, so the
fit and import see a real animal; its inference time is then only the server round trips).

The point cloud import rate: a mesh of N vertices with the Q, layer, confidence and colour
attributes (operators/points.py), N = 1,000,000.

Everything runs in one bpy 5.0 subprocess (a fresh Blender, like a click in a new session).

    python benchmarks/bench_extension.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

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

CLICK_LIMIT_S = 3.0
POINTS_RATE_MIN = 1_000_000
STAGES = ("load", "inference", "fit", "import")


def _inputs(tmp: str) -> tuple[str, str, str]:
    """(photo, model, model description)"""
    from PIL import Image

    chelsea = os.path.join(ROOT, ".cache", "photos", "chelsea.png")
    if not os.path.isfile(chelsea):
        raise SystemExit(f"{chelsea} is missing: run `bash scripts/setup.sh`")
    photo = os.path.join(tmp, "chelsea_1mp.jpg")
    with Image.open(chelsea) as im:
        im.convert("RGB").resize((1224, 816), Image.LANCZOS).save(photo, quality=92)
    real = os.path.join(ROOT, "assets", "dualpm.onnx")
    if os.path.isfile(real):
        return photo, real, "assets/dualpm.onnx"
    from tests import extension_fixtures as fx

    model = fx.oracle_model(os.path.join(tmp, "oracle.onnx"), fx.synthetic_scene())
    return photo, model, "oracle (trained model absent; inference = server round trips only)"


def _worker(photo: str, model: str, repeats: int, points: int) -> dict:
    """Runs inside the bpy subprocess."""
    import bpy

    from dualpm_addon.client import InferenceClient
    from operators import points as points_mod
    from operators import reconstruct

    out = {"blender": bpy.app.version_string}
    client = InferenceClient(model=model)
    t = time.perf_counter()
    client.start()
    out["server_start_s"] = time.perf_counter() - t
    clicks = []
    try:
        for i in range(repeats + 1):
            bpy.ops.wm.read_homefile(use_empty=True)
            for im in list(bpy.data.images):
                bpy.data.images.remove(im)
            timings = {}
            t = time.perf_counter()
            request = reconstruct.gather(bpy.context, photo, "", timings)
            rec = reconstruct.run_inference(request, timings=timings, predictor=client)
            reconstruct.build_scene(bpy.context, request, rec)
            total = time.perf_counter() - t
            if i > 0:  # the first click also builds the fit's template index
                clicks.append(dict(rec.timings, total=total, points=rec.num_points))
            else:
                out["first_click_s"] = total
    finally:
        client.close()
    out["clicks"] = clicks
    out["photo_size"] = list(rec.photo_size)

    rng = np.random.default_rng(0)
    arrays = dict(positions=rng.normal(size=(points, 3)).astype(np.float32),
                  q=rng.normal(size=(points, 3)).astype(np.float32),
                  layer=rng.integers(0, 4, points).astype(np.int16),
                  confidence=(1 + rng.random(points) * 9).astype(np.float32),
                  colour=rng.integers(0, 256, (points, 3)).astype(np.uint8))
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        mesh = points_mod.new_point_mesh("bench", **arrays)
        obj = bpy.data.objects.new("bench", mesh)
        bpy.context.scene.collection.objects.link(obj)
        rates.append(points / (time.perf_counter() - t))
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
    out["points_per_s"] = rates
    return out


def run(quick: bool = False) -> list[dict]:
    repeats = 3 if quick else 7
    points = 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        photo, model, model_name = _inputs(tmp)
        result = os.path.join(tmp, "result.json")
        code = (f"import json, sys; sys.path.insert(0, {ROOT!r}); from benchmarks import bench_extension as b; "
                f"r = b._worker({photo!r}, {model!r}, {repeats}, {points}); "
                f"open({result!r}, 'w').write(json.dumps(r))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
        if proc.returncode != 0 or not os.path.isfile(result):
            raise RuntimeError(f"benchmark worker failed: {proc.stderr[-2000:]}")
        with open(result) as f:
            r = json.load(f)
    from benchmarks.bench_server import machine

    common = {"model": model_name, "machine": machine(), "blender": r["blender"], "samples": len(r["clicks"]),
              "photo": f"{r['photo_size'][1]}x{r['photo_size'][0]} JPEG"}
    med = {k: statistics.median(c[k] for c in r["clicks"]) for k in (*STAGES, "total")}
    rows = [{"name": "click-to-rig, 1 MP photo, warm server (median)", "value": round(med["total"], 3), "unit": "s",
             "limit": CLICK_LIMIT_S, "pass": med["total"] <= CLICK_LIMIT_S, **common}]
    for s in STAGES:
        rows.append({"name": f"  stage: {s} (median)", "value": round(med[s], 4), "unit": "s", **common})
    rows.append({"name": "first click in a session (server already started)", "value": round(r["first_click_s"], 3),
                 "unit": "s", **common})
    rows.append({"name": "inference server start", "value": round(r["server_start_s"], 3), "unit": "s", **common})
    rate = statistics.median(r["points_per_s"])
    rows.append({"name": "point cloud import (1M points, 4 attributes)", "value": round(rate / 1e6, 3),
                 "unit": "M points/s", "limit": POINTS_RATE_MIN / 1e6, "pass": rate >= POINTS_RATE_MIN, **common})
    rows.append({"name": "points in the reconstruction", "value": int(r["clicks"][0]["points"]), "unit": "points",
                 **common})
    return rows


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
