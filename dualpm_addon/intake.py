"""The photo as the pipeline works on it: upright, and at most WORK_MAX_SIDE pixels a side.

Phones store a portrait photo sideways with an EXIF orientation tag that says how to turn it;
Blender ignores the tag, so without this the animal reached the predictor lying on its side.
`exif_orientation` reads the tag and `orient` turns an array (the pixels, an alpha mask) upright
as a photo viewer shows it.

A 12-50 MP photo holds far more than the pipeline uses (the segmenter looks at 320 x 320 pixels,
the predictor at a 160-pixel crop, the texture at a 1024 atlas), while the photo-sized masks,
distance fields and outlines cost in proportion to its pixels: a 24 MP photo took 12 s more than
the same photo at 2048 pixels. `work_factor` is the whole number of pixels a side that `shrink`
averages into one (a box filter): pixel i of the working photo covers pixels [f i, f (i + 1)) of
the original, so a camera matrix K of the working photo is diag(f, f, 1) K in the original's
pixels, exactly (the last f - 1 rows or columns at most are left out). An animal too small to
survive that (under ~160 pixels after it) is too small for the segmenter's view anyway.
"""

from __future__ import annotations

import math

import numpy as np

WORK_MAX_SIDE = 2048
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright, 2-8 mirrored and/or turned
TURNED = (5, 6, 7, 8)  # orientations whose upright photo has width and height swapped


def exif_orientation(path: str) -> int:
    """The EXIF orientation (1-8) of the image file at `path`; 1 without one, or where Pillow is
    missing or cannot read the file (Blender still may: EXR, HDR)."""
    try:
        from PIL import Image
    except ImportError:
        return 1
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - no EXIF or an unknown format: upright as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright_shape(shape, orientation: int) -> tuple[int, int]:
    """(H, W) of the upright photo whose stored pixels have shape `shape` (H, W, ...)."""
    h, w = int(shape[0]), int(shape[1])
    return (w, h) if orientation in TURNED else (h, w)


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """The stored (H, W, ...) array `a` turned upright for EXIF `orientation` (as Pillow's
    ImageOps.exif_transpose does); a view where numpy allows one."""
    a = np.asarray(a)
    if orientation == 2:  # mirrored left-right
        return a[:, ::-1]
    if orientation == 3:  # turned 180 degrees
        return a[::-1, ::-1]
    if orientation == 4:  # mirrored top-bottom
        return a[::-1]
    if orientation == 5:  # mirrored along the main diagonal
        return a.swapaxes(0, 1)
    if orientation == 6:  # stored turned 90 degrees counter-clockwise: turn it clockwise
        return np.rot90(a, k=-1)
    if orientation == 7:  # mirrored along the other diagonal
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:  # stored turned 90 degrees clockwise: turn it counter-clockwise
        return np.rot90(a, k=1)
    return a


def work_factor(height: int, width: int, max_side: int = WORK_MAX_SIDE) -> int:
    """Pixels a side that `shrink` averages into one so the photo is at most `max_side` a side
    (never so many that a side would vanish: a 30000 x 10 strip keeps its 10 rows' worth)."""
    f = max(1, math.ceil(max(int(height), int(width)) / float(max_side)))
    return max(1, min(f, int(height), int(width)))


def shrink(a: np.ndarray, factor: int) -> np.ndarray:
    """(H // f, W // f, ...) float32: the mean of each f x f block of `a` (a box filter)."""
    a = np.asarray(a)
    f = int(factor)
    if f <= 1:
        return a
    h, w = a.shape[0] // f, a.shape[1] // f
    if h == 0 or w == 0:
        raise ValueError(f"shrink: a {a.shape[1]}x{a.shape[0]} image has no {f}x{f} block")
    # f x f strided slices summed in place: 0.4 s for a 24 MP RGBA photo, against 0.65 s for a
    # reshape and mean (which copies the flipped, strided view Blender's pixels come in first).
    out = np.zeros((h, w) + a.shape[2:], np.float32)
    for i in range(f):
        for j in range(f):
            out += a[i: h * f: f, j: w * f: f]
    out /= np.float32(f * f)
    return out


def shrink_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(H // f, W // f) bool: the blocks at least half covered by `mask`."""
    if int(factor) <= 1:
        return np.asarray(mask, dtype=bool)
    return shrink(np.asarray(mask, dtype=np.float32), factor) >= 0.5


def scale_intrinsics(k: np.ndarray, factor: int) -> np.ndarray:
    """The working photo's camera matrix in the original photo's pixels."""
    return np.diag([float(factor), float(factor), 1.0]) @ np.asarray(k, dtype=np.float64)


def describe(record: dict) -> str:
    """What the intake did, for a status line ("" when nothing): record is NAME.json's `intake`
    ({"exif_orientation", "upright_size" [W, H], "work_factor"})."""
    notes = []
    if record.get("exif_orientation", 1) != 1:
        notes.append(f"turned upright (EXIF orientation {record['exif_orientation']})")
    if record.get("work_factor", 1) > 1:
        w, h = record["upright_size"]
        notes.append(f"worked on at 1/{record['work_factor']} of its {w}x{h}")
    return ", ".join(notes)


def shrunk_jpeg(path: str, factor: int):
    """((H // f, W // f, 3) uint8 stored pixels, f) of a large JPEG decoded by libjpeg at a power
    of two f >= `factor` (its DCT scaling: 0.08 s for 24 MP, against Blender's 1.3 s for the full
    pixels and 0.4 s more to shrink them), or None where that does not apply: not a JPEG, not RGB
    or grey (CMYK is left to Blender's conversion), f above 8, or Pillow missing. Pixel i covers
    the original's [f i, f (i + 1)) as a block mean's does, so the camera scales the same way
    (within 0.2 grey levels of the block mean of a full decode on a 24 MP photo)."""
    if factor < 2 or factor > 8:
        return None
    f = 1 << (int(factor) - 1).bit_length()  # the power of two at or above factor
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
            im.draft(im.mode, (w // f, h // f))  # Pillow picks the scale from the floor sizes
            if im.size != (-(-w // f), -(-h // f)):  # libjpeg's scaled size rounds up
                return None
            rgb = np.asarray(im.convert("RGB"))[: h // f, : w // f]
    except Exception:  # noqa: BLE001 - Blender decoded it: its own path stands
        return None
    return np.ascontiguousarray(rgb), f
