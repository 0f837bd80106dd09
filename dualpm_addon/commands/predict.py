"""`dualpm predict PHOTO... --out DIR [--mask FILE | --mask-dir DIR]`: photos to dual point maps
(NAME.npz each).

Runs the model in this process (ONNX Runtime) unless --server names a running v2 server (ours or
NVIDIA Triton). Each photo is decoded, searched for the animal, cropped and predicted
(dualpm_addon.preprocess); the map is written with pointmap.save, including `crop_box` and the
crop's `intrinsics`. One failing photo does not stop the batch: the exit code is the number of
photos that failed (at most 125); 2 also stands for a usage error (bad arguments, no model).

Masks, per photo, as `dualpm reconstruct` finds them (dualpm_addon/masks.py): `--mask FILE` for a
single photo, else DIR/NAME.mask.png with `--mask-dir DIR`, else NAME.mask.png beside the photo,
else the photo's own alpha where it marks something out, else none (the predictor finds the
animal). The --json summary says which for each photo ("mask": {"source", "path"}); inputs that
are another input's NAME.mask.png are masks, not photos.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ..batch import exit_code, output_names



def add_arguments(p) -> None:
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of a four-legged animal")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.npz (created if needed)")
    p.add_argument("--mask", default=None, metavar="FILE",
                   help="mask image for a single photo (white or opaque = animal, the photo's size); for "
                        "several photos use NAME.mask.png beside each, or --mask-dir")
    p.add_argument("--mask-dir", default=None, metavar="DIR",
                   help="folder of per-photo masks: DIR/NAME.mask.png for photo NAME.jpg (a photo without one "
                        "there uses NAME.mask.png beside it, its alpha, or none)")
    p.add_argument("--model", default=None, metavar="FILE", help="ONNX model (default assets/dualpm.onnx)")
    p.add_argument("--server", default=None, metavar="URL", help="use a running v2 inference server instead")
    p.add_argument("--token", default=None, metavar="T",
                   help="bearer token for --server (default: the DUALPM_TOKEN environment variable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="for the in-process model")
    p.add_argument("--json", default=None, metavar="FILE", help="also write a summary (timings, boxes, errors)")


def run(args) -> int:
    from .. import masks, pointmap
    from ..errors import DualPMError

    photos, skipped = masks.split_masks(args.photos)
    masks.check_arguments(photos, args.mask, args.mask_dir)
    if args.token and not args.server:
        raise DualPMError("--token needs --server")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise DualPMError(f"--out {args.out}: cannot create ({e.strerror or e})") from None

    t0 = time.monotonic()
    if args.server:
        from ..client import InferenceClient

        predictor = InferenceClient(url=args.server, token=args.token or os.environ.get("DUALPM_TOKEN")).start()
        where = f"server {args.server}"
    else:
        from ..inference import Runner

        predictor = Runner(args.model, device=args.device)
        where = f"{os.path.basename(predictor.path)} on {predictor.device}"
    print(f"dualpm predict: {len(photos)} photo(s), model {where} (ready in {time.monotonic() - t0:.1f} s)",
          file=sys.stderr)
    for p in skipped:
        print(f"{p}: a mask ({masks.SUFFIX} of another input), not predicted as a photo", file=sys.stderr)

    failed, summary = 0, []
    names = output_names(photos, "photo")
    for i, (photo, name) in enumerate(zip(photos, names), 1):
        t = time.monotonic()
        source, mask_path = masks.find(photo, args.mask_dir, args.mask)
        entry = {"photo": photo, "output": None, "mask": masks.record(source, mask_path)}
        try:
            maps = _predict(predictor, photo, mask_path, entry)
            out = os.path.join(args.out, name + ".npz")
            pointmap.save(out, maps)
            kept = int(pointmap.keep_mask(maps).sum())
            box = [round(float(v), 1) for v in maps["crop_box"]]
            entry.update(output=out, crop_box=box, points=kept, seconds=round(time.monotonic() - t, 3))
            print(f"[{i}/{len(photos)}] {photo}: {kept} points, mask {entry['mask']['source']}, crop {box} -> {out} "
                  f"({time.monotonic() - t:.2f} s)", file=sys.stderr)
        except DualPMError as e:
            failed += 1
            entry["error"] = str(e)
            print(f"[{i}/{len(photos)}] {photo}: failed: {e}", file=sys.stderr)
        summary.append(entry)
    if hasattr(predictor, "close"):
        predictor.close()
    print(f"dualpm predict: {len(photos) - failed} written, {failed} failed "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"photos": summary, "failed": failed, "model": where,
                       "seconds": round(time.monotonic() - t0, 3)}, f, indent=1)
    return exit_code(failed)


def _predict(predictor, photo: str, mask_path: str | None, entry: dict) -> dict:
    """Decode the photo and its mask (a mask's errors name it a mask), then both passes; a photo
    without a mask file uses its alpha where it marks something out (entry["mask"] says so)."""
    from .. import image_io, masks, preprocess
    from ..errors import DualPMError

    decoded = image_io.read_photo(photo)
    if mask_path:
        try:
            mask = image_io.read_mask(mask_path, decoded.size)
        except DualPMError as e:
            raise DualPMError(str(e) if str(e).startswith("mask ") else f"mask {e}") from None
    else:
        mask = decoded.mask
        entry["mask"] = masks.record("alpha" if mask is not None else "none", None)
    return preprocess.predict_photo(predictor, decoded.rgb, mask, decoded.focal_mm, os.path.basename(photo))
