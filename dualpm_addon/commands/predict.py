"""`dualpm predict PHOTO... --out DIR`: photos to dual point maps (NAME.npz each).

Runs the model in this process (ONNX Runtime) unless --server names a running v2 server (ours or
NVIDIA Triton). Each photo is decoded, searched for the animal, cropped and predicted
(dualpm_addon.preprocess); the map is written with pointmap.save, including `crop_box` and the
crop's `intrinsics`. One failing photo does not stop the batch: the exit code is the number of
photos that failed (at most 125); 2 also stands for a usage error (bad arguments, no model).
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
    p.add_argument("--mask", action="append", default=None, metavar="FILE",
                   help="a mask image for the photo (white or opaque = animal); give it once per photo, "
                        "in the same order, to mask several")
    p.add_argument("--model", default=None, metavar="FILE", help="ONNX model (default assets/dualpm.onnx)")
    p.add_argument("--server", default=None, metavar="URL", help="use a running v2 inference server instead")
    p.add_argument("--token", default=None, metavar="T",
                   help="bearer token for --server (default: the DUALPM_TOKEN environment variable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="for the in-process model")
    p.add_argument("--json", default=None, metavar="FILE", help="also write a summary (timings, boxes, errors)")


def run(args) -> int:
    from .. import pointmap, preprocess
    from ..errors import DualPMError

    masks = args.mask or []
    if masks and len(masks) != len(args.photos):
        raise DualPMError(f"--mask given {len(masks)} time(s) for {len(args.photos)} photo(s): "
                          f"give one mask per photo, in order")
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
    print(f"dualpm predict: {len(args.photos)} photo(s), model {where} (ready in {time.monotonic() - t0:.1f} s)",
          file=sys.stderr)

    failed, summary = 0, []
    names = output_names(args.photos, "photo")
    for i, (photo, name) in enumerate(zip(args.photos, names), 1):
        t = time.monotonic()
        entry = {"photo": photo, "output": None}
        try:
            maps = preprocess.predict_file(predictor, photo, masks[i - 1] if masks else None)
            out = os.path.join(args.out, name + ".npz")
            pointmap.save(out, maps)
            kept = int(pointmap.keep_mask(maps).sum())
            box = [round(float(v), 1) for v in maps["crop_box"]]
            entry.update(output=out, crop_box=box, points=kept, seconds=round(time.monotonic() - t, 3))
            print(f"[{i}/{len(args.photos)}] {photo}: {kept} points, crop {box} -> {out} "
                  f"({time.monotonic() - t:.2f} s)", file=sys.stderr)
        except DualPMError as e:
            failed += 1
            entry["error"] = str(e)
            print(f"[{i}/{len(args.photos)}] {photo}: failed: {e}", file=sys.stderr)
        summary.append(entry)
    if hasattr(predictor, "close"):
        predictor.close()
    print(f"dualpm predict: {len(args.photos) - failed} written, {failed} failed "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"photos": summary, "failed": failed, "model": where,
                       "seconds": round(time.monotonic() - t0, 3)}, f, indent=1)
    return exit_code(failed)
