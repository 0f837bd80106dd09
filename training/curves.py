"""A PNG of training progress from one or more run folders (`dualpm train`'s log.jsonl).

    python -m training.curves RUN_DIR... --out curves.png

Resumed runs continue the step count, so several folders draw one curve. Three panels against
samples seen (step x batch): validation PCK@0.1 and mask IoU on held-out clips (the figures
`dualpm eval` reports, on the run's small validation subset), and the training loss (a running
median, since batches of 8 are noisy). A dashed line marks where each folder starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from dualpm_addon.atomic import atomic_open
from dualpm_addon.errors import DualPMError

W, H, PAD = 420, 260, 46
COLOURS = {"pck": (33, 145, 140), "mask_iou": (253, 160, 37), "loss": (59, 82, 139)}


def read_runs(folders: list[str]) -> dict:
    """{'val': [(samples, pck, mask_iou)], 'loss': [(samples, total)], 'starts': [samples]}."""
    val, loss, starts = [], [], []
    for folder in folders:
        path = os.path.join(folder, "log.jsonl")
        meta_path = os.path.join(folder, "last.json")
        if not os.path.isfile(path):
            raise DualPMError(f"{folder}: no log.jsonl (not a `dualpm train` run folder)")
        batch = 8
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                batch = int(json.load(f).get("batch", batch))
        first = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed run
                seen = rec.get("step", 0) * batch
                first = seen if first is None else first
                if "val" in rec:
                    val.append((seen, rec["val"]["pck"], rec["val"]["mask_iou"]))
                elif "total" in rec:
                    loss.append((seen, rec["total"]))
        if first is not None:
            starts.append(first)
    if not val and not loss:
        raise DualPMError("the logs hold no training records")
    return {"val": sorted(val), "loss": sorted(loss), "starts": starts}


def running_median(y: np.ndarray, width: int = 25) -> np.ndarray:
    if len(y) < width:
        return y
    pad = np.pad(y, (width // 2, width - 1 - width // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, width), axis=1)


def _panel(draw, ox, title, series, x_max, y_range, starts):
    x0, y0, x1, y1 = ox + PAD, PAD - 16, ox + W - 12, H - PAD + 4
    draw.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
    draw.text((x0, 8), title, fill=(0, 0, 0))
    lo, hi = y_range
    sx = lambda x: x0 + (x1 - x0) * x / max(x_max, 1)  # noqa: E731
    sy = lambda y: y1 - (y1 - y0) * (np.clip(y, lo, hi) - lo) / (hi - lo)  # noqa: E731
    for s in starts[1:]:
        for y in range(int(y0), int(y1), 6):
            draw.line([sx(s), y, sx(s), y + 3], fill=(190, 190, 190))
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        draw.text((ox + 4, sy(v) - 6), f"{v:.2g}", fill=(90, 90, 90))
    draw.text((x0, y1 + 6), "0", fill=(90, 90, 90))
    draw.text((x1 - 70, y1 + 6), f"{x_max / 1000:.0f}k samples", fill=(90, 90, 90))
    for name, (xv, yv) in series.items():
        if len(xv) > 1:
            draw.line([(sx(a), sy(b)) for a, b in zip(xv, yv)], fill=COLOURS[name], width=2)
        elif len(xv) == 1:
            draw.ellipse([sx(xv[0]) - 2, sy(yv[0]) - 2, sx(xv[0]) + 2, sy(yv[0]) + 2], fill=COLOURS[name])


def draw_curves(runs: dict, out: str) -> None:
    img = Image.new("RGB", (2 * W, H), "white")
    draw = ImageDraw.Draw(img)
    x_max = max([v[0] for v in runs["val"]] + [v[0] for v in runs["loss"]] + [1])
    if runs["val"]:
        v = np.array(runs["val"], dtype=np.float64)
        _panel(draw, 0, "validation (held-out clips): PCK@0.1 (teal), mask IoU (orange)",
               {"pck": (v[:, 0], v[:, 1]), "mask_iou": (v[:, 0], v[:, 2])}, x_max, (0.0, 1.0), runs["starts"])
    if runs["loss"]:
        lo = np.array(runs["loss"], dtype=np.float64)
        y = running_median(lo[:, 1])
        rng = (float(np.percentile(y, 1)), float(np.percentile(y, 99)) + 1e-6)
        _panel(draw, W, "training loss (running median of 25 logs)", {"loss": (lo[:, 0], y)},
               x_max, rng, runs["starts"])
    with atomic_open(out, "wb") as f:
        img.save(f, format="PNG")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.curves", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        draw_curves(read_runs(args.runs), args.out)
    except DualPMError as e:
        print(f"python -m training.curves: error: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
