"""The DualPM loss: calibrated L2 with c = 1 + exp(raw), only on occupied pixels, plus BCE."""

import math

import torch

from training.loss import calibrated_l2, dualpm_loss


def _case(err=0.1, raw=0.0, occ_value=1.0):
    b, k, h, w = 1, 4, 8, 8
    P = torch.zeros(b, k, h, w, 3)
    Q = torch.zeros(b, k, h, w, 3)
    occ = torch.full((b, k, h, w), occ_value)
    target = {"P": P, "Q": Q, "occupancy": occ}
    out = {"P": P + torch.tensor([err, 0, 0]), "Q": Q + torch.tensor([0, err, 0]),
           "occupancy_logit": torch.full((b, k, h, w), 20.0 if occ_value else -20.0),
           "confidence_raw": torch.full((b, k, h, w), raw)}
    return out, target


def test_calibrated_l2_value():
    e = torch.tensor([0.04])
    raw = torch.tensor([0.5])
    c = 1 + math.exp(0.5)
    assert abs(float(calibrated_l2(e, raw)) - (c * 0.04 - math.log(c))) < 1e-6


def test_loss_matches_formula_on_occupied_pixels():
    out, target = _case(err=0.1, raw=0.0)
    parts = dualpm_loss(out, target)
    c = 2.0
    expected = 0.5 * (c * 0.01 - math.log(c)) * 2
    assert abs(float(parts["total"]) - expected) < 1e-4  # BCE ~ 0 for confident right occupancy


def test_unoccupied_pixels_carry_no_point_loss_even_with_nan_targets():
    out, target = _case(err=5.0, occ_value=0.0)
    target["P"][:] = float("nan")
    parts = dualpm_loss(out, target)
    assert torch.isfinite(parts["total"]) and float(parts["P"]) == 0 and float(parts["Q"]) == 0


def test_best_confidence_is_inverse_squared_error():
    # d/dc (c e - log c) = 0 at c = 1/e: the loss is lowest there
    e = 0.01
    vals = {raw: float(calibrated_l2(torch.tensor([e]), torch.tensor([raw]))) for raw in (2.0, math.log(99.0), 6.0)}
    assert vals[math.log(99.0)] < vals[2.0] and vals[math.log(99.0)] < vals[6.0]


def test_occupancy_cross_entropy_penalises_wrong_occupancy():
    out, target = _case(err=0.0)
    good = float(dualpm_loss(out, target)["occ"])
    out["occupancy_logit"] = -out["occupancy_logit"]
    assert float(dualpm_loss(out, target)["occ"]) > good + 10


def test_distance_ambiguity_goes_to_the_scale_term_not_the_point_term():
    # (f, z) -> (a f, a z) keeps x, y and scales z: the point term ignores it, |log a| measures it
    b, k, h, w = 1, 4, 8, 8
    target = {"P": torch.randn(b, k, h, w, 3) * 0.2 + torch.tensor([0.0, 0.0, 6.0]),
              "Q": torch.zeros(b, k, h, w, 3), "occupancy": torch.ones(b, k, h, w)}
    P = target["P"].clone()
    P[..., 2] *= 1.5
    out = {"P": P, "Q": target["Q"], "occupancy_logit": torch.full((b, k, h, w), 20.0),
           "confidence_raw": torch.zeros(b, k, h, w)}
    parts = dualpm_loss(out, target)
    assert float(parts["P_rmse"]) < 1e-5
    assert abs(float(parts["log_scale"]) - math.log(1.5)) < 1e-5
