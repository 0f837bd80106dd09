"""The DualPM loss (DESIGN.md): confidence-calibrated L2 on P and Q plus occupancy cross-entropy.

On the occupied pixels of each layer (true occupancy > 0.5):

    0.5 * (c ||P - P*||^2 - alpha log c) + 0.5 * (c ||Q - Q*||^2 - alpha log c),  c = 1 + exp(raw)

averaged over those pixels, plus binary cross-entropy of every layer's occupancy over all pixels.

P and the (focal length, distance) ambiguity. One photo cannot tell a near animal through a wide
lens from a far one through a long lens: (f, z) and (a f, a z) give the same image, and in our
parametrisation (training/network.py) they give the same x and y and a depth z scaled by a. A
metre-scale error in distance would dominate ||P - P*||^2, push c towards 1 everywhere and make
inference (c >= 2) keep nothing. So the P term is computed after removing that one degree of
freedom: P's z is multiplied by s = exp(mean over occupied pixels of log(z*/z)) (detached), and
the distance itself is learned by a separate term, W_SCALE * |log s| per sample. The shipped P is
still metric, with the network's best guess of the distance; the fitter re-solves distance and
focal length anyway (issue 5).
log c is computed as softplus(raw), which is exact and stable. The Q decoder's own occupancy
logits get the same cross-entropy (deep supervision), so the image branch learns the silhouette
directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALPHA = 1.0
W_P = 0.5
W_Q = 0.5
W_OCC = 1.0
W_SCALE = 1.0
RAW_MAX = 15.0  # c <= 1 + e^15: keeps fp16/bf16 training finite; far beyond any useful confidence


def calibrated_l2(err2: torch.Tensor, conf_raw: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Per-pixel c * err2 - alpha * log c with c = 1 + exp(raw)."""
    raw = conf_raw.clamp(max=RAW_MAX)
    return (1.0 + torch.exp(raw)) * err2 - alpha * F.softplus(raw)


def dualpm_loss(out: dict, target: dict, alpha: float = ALPHA) -> dict:
    """out: network outputs (P, Q, occupancy_logit, confidence_raw, optional occupancy_logit_q).
    target: P, Q (B,K,H,W,3), occupancy (B,K,H,W). Returns a dict of scalar tensors with 'total'."""
    occ_t = target["occupancy"].float()
    occupied = (occ_t > 0.5).float()
    n = occupied.sum().clamp(min=1.0)
    P, Pt = out["P"].float(), torch.nan_to_num(target["P"].float())
    zp = P[..., 2].clamp(min=1e-3)
    zt = Pt[..., 2].clamp(min=1e-3)
    dims = tuple(range(1, occupied.dim()))
    per = occupied.sum(dims).clamp(min=1.0)
    log_s = ((torch.log(zt) - torch.log(zp)) * occupied).sum(dims) / per  # (B,)
    has = (occupied.sum(dims) > 0).float()
    scale_term = (log_s.abs() * has).sum() / has.sum().clamp(min=1.0)
    s = torch.exp(log_s.detach()).view(-1, *([1] * (P.dim() - 2)))
    P_al = torch.cat([P[..., :2], P[..., 2:] * s.unsqueeze(-1)], -1)
    dp = (P_al - Pt).square().sum(-1)
    dq = (out["Q"].float() - torch.nan_to_num(target["Q"].float())).square().sum(-1)
    # zero the errors off the surface first: targets there may be NaN or arbitrary
    dp = torch.where(occupied > 0, dp, torch.zeros_like(dp))
    dq = torch.where(occupied > 0, dq, torch.zeros_like(dq))
    raw = out["confidence_raw"].float()
    lp = (calibrated_l2(dp, raw, alpha) * occupied).sum() / n
    lq = (calibrated_l2(dq, raw, alpha) * occupied).sum() / n
    occ_bce = F.binary_cross_entropy_with_logits(out["occupancy_logit"].float(), occ_t)
    total = W_P * lp + W_Q * lq + W_OCC * occ_bce + W_SCALE * scale_term
    parts = {"P": lp.detach(), "Q": lq.detach(), "occ": occ_bce.detach(), "log_scale": scale_term.detach(),
             "P_rmse": (dp.sum() / n).sqrt().detach(), "Q_rmse": (dq.sum() / n).sqrt().detach()}
    if "occupancy_logit_q" in out:
        occ_q = F.binary_cross_entropy_with_logits(out["occupancy_logit_q"].float(), occ_t)
        total = total + W_OCC * occ_q
        parts["occ_q"] = occ_q.detach()
    parts["total"] = total
    return parts
