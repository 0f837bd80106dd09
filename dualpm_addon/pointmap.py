"""Dual point maps: the arrays of DESIGN.md, their checks, storage and point extraction.

A dual point map holds, for K amodal layers over an H x W grid (near to far along each ray):

    P           float32 (K, H, W, 3)  camera-space point, OpenCV frame, metres
    Q           float32 (K, H, W, 3)  canonical point (canonical.py)
    occupancy   float32 (K, H, W)     in [0, 1]
    confidence  float32 (K, H, W)     >= 1
    intrinsics  float32 (3, 3)        of the grid's camera, pixel centres at integer + 0.5

Optional: `crop_box` float32 (4,) x0 y0 x1 y1 of the grid in the source photo's pixels; for
training samples also `rgb` uint8 (H, W, 3), `mask` bool (H, W), `joints` float32 (J, 3),
`joint_names` str (J,), `rotations` float32 (J, 4), `species` str, and so on.

Files are `.npz`, written atomically (a `.partial` name until complete) and always read with
allow_pickle=False.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import DualPMError
from .npz import write_npz

REQUIRED = ("P", "Q", "occupancy", "confidence", "intrinsics")
OCCUPANCY_THRESHOLD = 0.5
CONFIDENCE_THRESHOLD = 2.0


def validate(arrays: dict, source: str = "dual point map") -> dict:
    """Check names, shapes, dtypes and values; return the arrays as float32 where required."""
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DualPMError(f"{source}: missing {', '.join(missing)}")
    p = np.asarray(arrays["P"])
    if p.ndim != 4 or p.shape[-1] != 3:
        raise DualPMError(f"{source}: P has shape {p.shape}, expected (K, H, W, 3)")
    k, h, w, _ = p.shape
    if k < 1 or h < 1 or w < 1:
        raise DualPMError(f"{source}: P has an empty dimension {p.shape}")
    expect = {"Q": (k, h, w, 3), "occupancy": (k, h, w), "confidence": (k, h, w), "intrinsics": (3, 3)}
    for name, shape in expect.items():
        if np.shape(arrays[name]) != shape:
            raise DualPMError(f"{source}: {name} has shape {np.shape(arrays[name])}, expected {shape}")
    out = dict(arrays)
    for name in REQUIRED:
        a = np.asarray(arrays[name])
        if not np.issubdtype(a.dtype, np.floating):
            raise DualPMError(f"{source}: {name} has dtype {a.dtype}, expected float32")
        out[name] = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(out["intrinsics"])) or out["intrinsics"][0, 0] <= 0 or out["intrinsics"][1, 1] <= 0:
        raise DualPMError(f"{source}: intrinsics are not a valid camera")
    if "crop_box" in arrays and np.shape(arrays["crop_box"]) != (4,):
        raise DualPMError(f"{source}: crop_box has shape {np.shape(arrays['crop_box'])}, expected (4,)")
    return out


def save(path: str, arrays: dict, compress: bool = True) -> None:
    """Validate, then write deterministically and atomically (npz.write_npz)."""
    write_npz(path, validate(arrays, source=os.path.basename(path)), compress=compress)


def load(path: str) -> dict:
    """Read and validate a dual point map; one-line errors name the file."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DualPMError(f"{name}: not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return validate(arrays, source=name)


def keep_mask(arrays: dict, occupancy_threshold: float = OCCUPANCY_THRESHOLD,
              confidence_threshold: float = CONFIDENCE_THRESHOLD) -> np.ndarray:
    """(K, H, W) bool: the points inference keeps (DualPM: occupancy > 0.5 and c >= 2)."""
    keep = (arrays["occupancy"] > occupancy_threshold) & (arrays["confidence"] >= confidence_threshold)
    return keep & np.all(np.isfinite(arrays["P"]), axis=-1) & np.all(np.isfinite(arrays["Q"]), axis=-1)


def extract_points(arrays: dict, occupancy_threshold: float = OCCUPANCY_THRESHOLD,
                   confidence_threshold: float = CONFIDENCE_THRESHOLD) -> dict:
    """The amodal point cloud: P, Q (N, 3) float32, layer (N,) int16, pixel (N, 2) int32 (row, col),
    confidence and occupancy (N,) float32, and `colour` (N, 3) uint8 where the map has `rgb`."""
    # keep_mask's points, in its order; P and Q are checked for NaN on the kept pixels alone (a
    # video extracts every frame: the whole-map check was most of the cost)
    keep = (arrays["occupancy"] > occupancy_threshold) & (arrays["confidence"] >= confidence_threshold)
    layer, row, col = np.nonzero(keep)
    p, q = arrays["P"][layer, row, col], arrays["Q"][layer, row, col]
    finite = np.all(np.isfinite(p), axis=-1) & np.all(np.isfinite(q), axis=-1)
    if not finite.all():
        layer, row, col, p, q = layer[finite], row[finite], col[finite], p[finite], q[finite]
    out = {
        "P": p.astype(np.float32),
        "Q": q.astype(np.float32),
        "layer": layer.astype(np.int16),
        "pixel": np.stack([row, col], axis=1).astype(np.int32),
        "confidence": arrays["confidence"][layer, row, col].astype(np.float32),
        "occupancy": arrays["occupancy"][layer, row, col].astype(np.float32),
    }
    if "rgb" in arrays:
        out["colour"] = np.asarray(arrays["rgb"])[row, col].astype(np.uint8)
    return out
