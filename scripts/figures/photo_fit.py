"""docs/images/photo_fit_overlays.png: the photo fit seen through the photo's camera.

Top row: held-out renders (one per set of benchmarks/bench_fit_quality.py: held-out clip, unseen
species, lying, authored pose), each reconstructed with the segmenter's mask as `dualpm
reconstruct` would, the rig's outline and bones drawn over the render (preview.overlay) and its
rig IoU against the true mask. Bottom row: real photos (Muybridge's cat, scikit-image's
chelsea), old fit (`--fit points`) beside the photo fit.

    .venv/bin/python scripts/figures/photo_fit.py [--out docs/images/photo_fit_overlays.png]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

TILE = 240


def labelled(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    from dualpm_addon import preview

    im = Image.fromarray(preview.resize_nearest(img, TILE) if img.shape[0] != TILE else img)
    canvas = Image.new("RGB", (im.width, im.height + 18), (255, 255, 255))
    canvas.paste(im, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def reconstruct(runner, segmenter, rgb, focal_mm, fit: str = "photo"):
    from dualpm_addon import pipeline, preprocess

    pm = preprocess.predict_photo(runner, rgb, None, focal_mm, "photo", segmenter=segmenter)
    return pipeline.from_pointmap(pm, pipeline.PhotoInput(rgb, None, focal_mm, "photo"),
                                  settings=pipeline.Settings(fit=fit))


def main(argv=None) -> int:
    import bench_fit_quality as bq
    from PIL import Image

    from dualpm_addon import image_io, metrics, pipeline, preview
    from dualpm_addon.inference import Runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "photo_fit_overlays.png"))
    a = ap.parse_args(argv)
    runner = Runner(os.path.join(ROOT, "assets", "dualpm.onnx"), device="cpu")
    segmenter = pipeline.load_segmenter("auto")[0]
    templates = os.path.join(ROOT, ".cache", "templates")
    top = []
    for name, pick in (("heldout_clips", 1), ("unseen_species", 0), ("lying_death", 0), ("authored", 1)):
        s = bq.renders(name, pick + 1, templates)[pick]
        rec = reconstruct(runner, segmenter, np.asarray(s["rgb"]), float(s["focal_mm"]))
        iou = metrics.rig_iou(rec.fit.posed_vertices, rec.fit.faces, rec.photo_intrinsics, np.asarray(s["mask"], bool))
        top.append(labelled(preview.overlay(np.asarray(s["rgb"]), rec, TILE),
                            f"{name} ({s['species']}): IoU {iou:.2f}"))
    bottom = []
    for photo_name in ("muybridge_cat.png", "chelsea.png"):
        photo = image_io.read_photo(os.path.join(ROOT, ".cache", "photos", photo_name))
        for fit in ("points", "photo"):
            rec = reconstruct(runner, segmenter, photo.rgb, photo.focal_mm, fit)
            over = preview.overlay(photo.rgb, rec, TILE)
            bottom.append(labelled(over, f"{photo_name[:-4]}, {fit} fit: IoU vs mask {rec.rig_iou:.2f}"))
    width = max(sum(t.shape[1] for t in top), sum(t.shape[1] for t in bottom))

    def row(tiles):
        r = np.concatenate(tiles, axis=1)
        return np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)

    Image.fromarray(np.concatenate([row(top), row(bottom)], axis=0)).save(a.out, optimize=True)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
