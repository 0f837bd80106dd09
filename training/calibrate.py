"""Per-layer occupancy calibration: a logit bias per amodal layer, chosen on validation renders.

The occupancy loss is a plain binary cross-entropy over every pixel, and the hidden layers are
thin (layers 2-3 cover about a tenth of the pixels that layer 0 does), so their predicted
probability rarely reaches 0.5: with the usual threshold almost no hidden surface survives. The
fix here costs nothing at inference: for each layer k > 0 the threshold t_k that maximises the
occupancy IoU pooled over validation samples (no mask input) is found, and its logit is folded
into the exported graph as a bias, occupancy_k = sigmoid(logit_k - logit(t_k)). Everything
downstream keeps its 0.5 threshold and now reads calibrated probabilities.

    bias = occupancy_bias(net, files)   # (K,) added to the logits; 0 where 0.5 was best already
"""

from __future__ import annotations

import numpy as np
import torch

from dualpm_addon.errors import DualPMError

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
# Layer 0 is also the animal detector: preprocess finds, crops and refuses ("no animal found")
# on its 0.5, and moving that threshold changed what was found in real photos (a looser
# layer 0 made chelsea's region mostly unconfident). It keeps its trained threshold.
FIXED_LAYERS = (0,)


def logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def layer_ious(probabilities: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """(T, K) pooled IoU of (N, K, H, W) probabilities > each threshold against truth > 0.5."""
    t = np.asarray(truth) > 0.5
    out = np.zeros((len(thresholds), t.shape[1]))
    for i, th in enumerate(thresholds):
        p = np.asarray(probabilities) > th
        inter = (p & t).sum(axis=(0, 2, 3))
        union = (p | t).sum(axis=(0, 2, 3))
        out[i] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


def choose_bias(probabilities: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS,
                fixed=FIXED_LAYERS) -> tuple[np.ndarray, dict]:
    """(K,) logit bias and a report {threshold, iou_at_0.5, iou_calibrated} per layer. Ties go to
    the threshold nearest 0.5, so a layer that is already calibrated keeps bias 0; `fixed` layers
    keep 0.5 (bias 0) whatever their IoU."""
    thresholds = np.asarray(thresholds, np.float64)
    if 0.5 not in thresholds:
        thresholds = np.append(thresholds, 0.5)
    ious = layer_ious(probabilities, truth, thresholds)
    order = np.argsort(np.abs(thresholds - 0.5), kind="stable")  # 0.5 first, then its neighbours
    best = order[np.argmax(ious[order], axis=0)]
    best[[k for k in fixed if k < len(best)]] = order[0]
    chosen = thresholds[best]
    bias = np.array([-logit(t) for t in chosen])
    report = {"threshold": [float(t) for t in chosen], "iou_at_0.5": [round(float(v), 4) for v in ious[order[0]]],
              "iou_calibrated": [round(float(ious[b, k]), 4) for k, b in enumerate(best)]}
    return bias, report


def occupancy_bias(net, files: list[str], batch: int = 8) -> tuple[np.ndarray, dict]:
    """Run `net` (no mask input) on validation sample files and choose the bias (choose_bias)."""
    from training.dataset import load_sample, mask_input

    if not files:
        raise DualPMError("calibration: no validation samples")
    net = net.eval()
    probs, truth = [], []
    with torch.no_grad():
        for i in range(0, len(files), batch):
            samples = [load_sample(f) for f in files[i:i + batch]]
            image = torch.from_numpy(np.stack([s["rgb"] for s in samples]).astype(np.uint8))
            mask = torch.from_numpy(np.stack([mask_input(np.asarray(s["mask"], bool), False) for s in samples]))
            probs.append(torch.sigmoid(net(image, mask)["occupancy_logit"]).numpy())
            truth.append(np.stack([np.nan_to_num(np.asarray(s["occupancy"], np.float32)) for s in samples]))
    bias, report = choose_bias(np.concatenate(probs), np.concatenate(truth))
    report["samples"] = len(files)
    return bias, report
