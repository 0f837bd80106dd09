"""A PNG grid to look at synthetic samples: image, mask, Q as colour, depth of each layer.

    python -m training.contact_sheet DIR_OR_NPZ... --out sheet.png [--max 8]

One row per sample. Columns: the rgb image (occluders outlined in red when present), the mask,
Q of layer 0 and layer 1 as colour (x, y, z of the canonical box -> r, g, b; the same box for
every row, so a colour means one body point everywhere), then the depth (P.z) of every layer
(near bright, far dark, one range per row; empty pixels dark grey).
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np
from PIL import Image, ImageDraw

from dualpm_addon import pointmap
from dualpm_addon.errors import DualPMError

EMPTY = np.array([40, 40, 40], dtype=np.uint8)
# A perceptually ordered ramp (dark blue -> teal -> yellow), after matplotlib's viridis.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def _ramp(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(x.astype(int), len(_RAMP) - 2)
    f = (x - i)[..., None]
    return (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


def q_colour(q: np.ndarray, occupied: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    c = (q - lo) / np.maximum(hi - lo, 1e-9)
    out = (np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.where(occupied[..., None], out, EMPTY)


def depth_colour(z: np.ndarray, occupied: np.ndarray, near: float, far: float) -> np.ndarray:
    x = 1 - (z - near) / max(far - near, 1e-9)
    return np.where(occupied[..., None], _ramp(x), EMPTY)


def sheet(samples: list[dict], labels: bool = True) -> Image.Image:
    if not samples:
        raise DualPMError("contact sheet: no samples")
    k = samples[0]["P"].shape[0]
    h, w = samples[0]["P"].shape[1:3]
    qs = [s["Q"][s["occupancy"] > 0.5] for s in samples]
    allq = np.concatenate([q for q in qs if len(q)] or [np.zeros((1, 3))])
    lo, hi = allq.min(axis=0), allq.max(axis=0)
    titles = ["image", "mask", "Q layer 0", "Q layer 1"][: 2 + min(k, 2)] + [f"depth {i}" for i in range(k)]
    top = 14 if labels else 0
    left = 0
    grid = Image.new("RGB", (left + w * len(titles), top + h * len(samples)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, title in enumerate(titles):
        if labels:
            draw.text((left + c * w + 3, 1), title, fill=(0, 0, 0))
    for r, s in enumerate(samples):
        occ = s["occupancy"] > 0.5
        cells = []
        rgb = np.asarray(s["rgb"]) if "rgb" in s else np.zeros((h, w, 3), np.uint8)
        if "occluder" in s and np.any(s["occluder"]):
            o = np.asarray(s["occluder"], dtype=bool)
            edge = o & ~(np.roll(o, 1, 0) & np.roll(o, -1, 0) & np.roll(o, 1, 1) & np.roll(o, -1, 1))
            rgb = rgb.copy()
            rgb[edge] = (255, 0, 0)
        cells.append(rgb)
        mask = np.asarray(s["mask"]) if "mask" in s else occ[0]
        cells.append(np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2))
        for layer in range(min(k, 2)):
            cells.append(q_colour(s["Q"][layer], occ[layer], lo, hi))
        z = s["P"][..., 2]
        near, far = (float(z[occ].min()), float(z[occ].max())) if occ.any() else (0.0, 1.0)
        for layer in range(k):
            cells.append(depth_colour(z[layer], occ[layer], near, far))
        for c, cell in enumerate(cells):
            grid.paste(Image.fromarray(np.ascontiguousarray(cell)), (left + c * w, top + r * h))
        if labels and "species" in s:
            draw.text((3, top + r * h + h - 12), str(s["species"]), fill=(255, 255, 255))
    return grid


def write(path: str, samples: list[dict], labels: bool = True) -> None:
    img = sheet(samples, labels)
    tmp = path + ".partial"
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.contact_sheet", description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="sample .npz files or folders of them")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max", type=int, default=8)
    args = ap.parse_args(argv)
    files = []
    for p in args.inputs:
        files += sorted(glob.glob(os.path.join(p, "*.npz"))) if os.path.isdir(p) else [p]
    try:
        write(args.out, [pointmap.load(f) for f in files[: args.max]])
    except DualPMError as e:
        print(f"contact_sheet: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
