"""Evaluation figures of a predicted dual point map against the truth (numpy; scipy when present).

- PCK@0.1 of Q on visible pixels: the fraction of truly visible pixels (layer 0 occupied) whose
  predicted first-layer Q lies within 0.1 body lengths of the true Q. Q lives in the reference
  (horse) canonical space, so the body length is the horse's, nose to tail tip along Y
  (REFERENCE_BODY_LENGTH, `template.body_length` of assets/template_horse.npz).
- Amodal Chamfer distance in cm between the predicted points that inference keeps
  (occupancy > 0.5 and confidence >= 2, every layer) and the true surface points (every occupied
  pixel of every true layer): the mean of the two directed mean nearest-neighbour distances.
  Reported as is and after aligning the predicted cloud to the true one by translation and
  scale (centroids matched, RMS radii matched), which removes the distance/size ambiguity of a
  single photo. `scale` multiplies distances, e.g. to report at horse scale.
- Mask IoU of predicted (occupancy > 0.5) and true first-layer occupancy.
- Per-layer figures: occupancy IoU, Chamfer and mean Q error for each layer.
- Joint error of a fitted skeleton: the mean distance over the joints both skeletons name, after
  the same translation + scale alignment, in % of the animal's body length (`joint_error_pct`).
- Rig IoU: the fitted surface (posed mesh, camera space) rasterized through the camera the fit
  placed it in (silhouette.rasterize), against the true mask: what the artist sees when the rig
  is looked at through the scene's camera. No alignment: a rig that is the right shape in the
  wrong place scores low (`rig_iou`).
"""

from __future__ import annotations

import numpy as np

from . import silhouette
from .errors import DualPMError
from .pointmap import CONFIDENCE_THRESHOLD, OCCUPANCY_THRESHOLD

REFERENCE_BODY_LENGTH = 2.4307742714881897  # metres: assets/template_horse.npz, canonical Y extent
PCK_THRESHOLD = 0.1
MAX_POINTS = 20000  # Chamfer subsamples larger clouds (deterministically) to bound the cost


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    union = np.logical_or(pred, true).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, true).sum() / union)


def pck(pred: dict, true: dict, body_length: float = REFERENCE_BODY_LENGTH, threshold: float = PCK_THRESHOLD) -> float:
    """PCK of the first-layer Q on truly visible pixels; NaN when nothing is visible."""
    vis = np.asarray(true["occupancy"])[0] > OCCUPANCY_THRESHOLD
    if not vis.any():
        return float("nan")
    err = np.linalg.norm(np.asarray(pred["Q"])[0][vis] - np.asarray(true["Q"])[0][vis], axis=-1)
    return float(np.mean(err < threshold * body_length))


def _subsample(points: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    if len(points) <= n:
        return points
    idx = np.linspace(0, len(points) - 1, n).astype(np.int64)
    return points[idx]


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point of a to its nearest point of b."""
    try:
        from scipy.spatial import cKDTree

        return cKDTree(b).query(a)[0]
    except ImportError:  # pragma: no cover - scipy is present wherever the extension runs evaluation
        out = np.empty(len(a))
        for i in range(0, len(a), 1024):
            d = ((a[i:i + 1024, None, :] - b[None]) ** 2).sum(-1)
            out[i:i + 1024] = np.sqrt(d.min(1))
        return out


def align(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """pred moved and scaled so its centroid and RMS radius match true's."""
    pc, tc = pred.mean(0), true.mean(0)
    ps = np.sqrt(((pred - pc) ** 2).sum(1).mean())
    ts = np.sqrt(((true - tc) ** 2).sum(1).mean())
    return (pred - pc) * (ts / ps if ps > 0 else 1.0) + tc


def surface_samples(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) points uniformly by area on a triangle mesh (a fixed seed: the same draws each run),
    the point sets chamfer_cm compares surfaces by."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    i = rng.choice(len(tri), n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)[:, None]
    return tri[i, 0] * (1 - s) + tri[i, 1] * (s * (1 - r2[:, None])) + tri[i, 2] * (s * r2[:, None])


def chamfer_cm(pred: np.ndarray, true: np.ndarray, aligned: bool = False, scale: float = 1.0) -> float:
    """Symmetric mean Chamfer distance in cm between (N,3) and (M,3) point sets in metres.
    inf when exactly one of them is empty, 0 when both are."""
    pred = _subsample(np.asarray(pred, np.float64).reshape(-1, 3))
    true = _subsample(np.asarray(true, np.float64).reshape(-1, 3))
    if len(pred) == 0 or len(true) == 0:
        return 0.0 if len(pred) == len(true) else float("inf")
    if aligned:
        pred = align(pred, true)
    d = 0.5 * (_nearest(pred, true).mean() + _nearest(true, pred).mean())
    return float(100.0 * scale * d)


def joint_error_pct(joints: np.ndarray, names, true_joints: np.ndarray, true_names, body_length: float) -> float:
    """Mean joint distance over shared names in % of body_length, after aligning the joints to the
    true ones by translation and scale (a photo fixes neither the distance nor the size). NaN when
    fewer than 3 names are shared."""
    truth = dict(zip(true_names, np.asarray(true_joints, np.float64)))
    shared = [i for i, n in enumerate(names) if n in truth]
    if len(shared) < 3:
        return float("nan")
    pred = np.asarray(joints, np.float64)[shared]
    true = np.array([truth[names[i]] for i in shared])
    return float(100.0 * np.linalg.norm(align(pred, true) - true, axis=1).mean() / body_length)


def rig_iou(vertices_cam: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray, true_mask: np.ndarray) -> float:
    """IoU of the posed surface's silhouette through `intrinsics` with true_mask (H, W), the
    silhouette rasterized at the mask's size (pixel centres at integer + 0.5)."""
    true_mask = np.asarray(true_mask, bool)
    if true_mask.ndim != 2:
        raise DualPMError(f"rig_iou: mask has shape {true_mask.shape}, expected (H, W)")
    return mask_iou(silhouette.rasterize(vertices_cam, faces, intrinsics, true_mask.shape), true_mask)


def kept(pred: dict) -> np.ndarray:
    """(K,H,W) bool: the predicted points inference keeps."""
    keep = np.asarray(pred["occupancy"]) > OCCUPANCY_THRESHOLD
    if "confidence" in pred:
        keep &= np.asarray(pred["confidence"]) >= CONFIDENCE_THRESHOLD
    return keep & np.all(np.isfinite(np.asarray(pred["P"])), axis=-1)


def evaluate(pred: dict, true: dict, scale: float = 1.0, body_length: float = REFERENCE_BODY_LENGTH) -> dict:
    """All figures for one sample. pred: P, Q, occupancy, confidence; true: P, Q, occupancy."""
    keep = kept(pred)
    tocc = np.asarray(true["occupancy"]) > OCCUPANCY_THRESHOLD
    pp, tp = np.asarray(pred["P"]), np.asarray(true["P"])
    out = {
        "pck": pck(pred, true, body_length),
        "mask_iou": mask_iou(np.asarray(pred["occupancy"])[0] > OCCUPANCY_THRESHOLD, tocc[0]),
        "chamfer_cm": chamfer_cm(pp[keep], tp[tocc], scale=scale),
        "chamfer_aligned_cm": chamfer_cm(pp[keep], tp[tocc], aligned=True, scale=scale),
        "points_kept": int(keep.sum()),
        "points_true": int(tocc.sum()),
        "layers": [],
    }
    pocc = np.asarray(pred["occupancy"]) > OCCUPANCY_THRESHOLD
    for k in range(tocc.shape[0]):
        both = pocc[k] & tocc[k]
        qerr = (float(np.linalg.norm(np.asarray(pred["Q"])[k][both] - np.asarray(true["Q"])[k][both], axis=-1).mean())
                if both.any() else float("nan"))
        out["layers"].append({
            "occupancy_iou": mask_iou(pocc[k], tocc[k]),
            "chamfer_cm": chamfer_cm(pp[k][keep[k]], tp[k][tocc[k]], scale=scale),
            "q_error_m": qerr,
            "true_pixels": int(tocc[k].sum()),
        })
    return out


def _finite_mean(vals) -> float:
    v = np.asarray([x for x in vals], np.float64)
    ok = np.isfinite(v)
    return float(v[ok].mean()) if ok.any() else float("nan")


def summarise_fit(errors) -> dict:
    """fit_joint_error_pct: the mean over the fits that worked; fit_failures: the NaN ones (no
    animal found, or the fit refused the points)."""
    errors = list(errors)
    return {"fit_joint_error_pct": _finite_mean(errors),
            "fit_failures": int(sum(not np.isfinite(e) for e in errors))}


def summarise(rows: list[dict]) -> dict:
    """Mean of every figure over samples (NaN and inf entries skipped and counted)."""
    if not rows:
        return {"samples": 0}
    out = {"samples": len(rows)}
    for key in ("pck", "mask_iou", "chamfer_cm", "chamfer_aligned_cm", "points_kept"):
        out[key] = _finite_mean(r[key] for r in rows)
    if any("fit_joint_error_pct" in r for r in rows):
        out.update(summarise_fit(r.get("fit_joint_error_pct", float("nan")) for r in rows))
    out["chamfer_failures"] = int(sum(not np.isfinite(r["chamfer_cm"]) for r in rows))
    k = len(rows[0]["layers"])
    out["layers"] = [{key: _finite_mean(r["layers"][i][key] for r in rows)
                      for key in ("occupancy_iou", "chamfer_cm", "q_error_m", "true_pixels")} for i in range(k)]
    return out
