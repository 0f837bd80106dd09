"""Occupancy calibration: per-layer thresholds chosen by pooled IoU, folded in as logit biases."""

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from training import calibrate


def _maps(rng, n=4, size=16):
    truth = np.zeros((n, 2, size, size), np.float32)
    truth[:, :, 4:12, 4:12] = 1.0
    probs = np.empty_like(truth)
    # layer 0 is calibrated (animal 0.9, background 0.1); layer 1 under-confident (0.3 vs 0.05)
    probs[:, 0] = np.where(truth[:, 0] > 0, 0.9, 0.1)
    probs[:, 1] = np.where(truth[:, 1] > 0, 0.3, 0.05)
    return probs + rng.uniform(-0.02, 0.02, probs.shape), truth


def test_an_under_confident_layer_gets_a_positive_bias_and_a_calibrated_one_none():
    probs, truth = _maps(np.random.default_rng(0))
    bias, report = calibrate.choose_bias(probs, truth, fixed=())
    assert bias[0] == 0.0 and report["threshold"][0] == 0.5  # ties go to 0.5
    assert report["iou_at_0.5"][1] == 0.0 and report["iou_calibrated"][1] == 1.0
    assert 0.05 < report["threshold"][1] < 0.3 and bias[1] > 0
    # with the bias, 0.5 separates the layer exactly
    logit = np.log(probs[:, 1] / (1 - probs[:, 1]))
    assert np.array_equal(1 / (1 + np.exp(-(logit + bias[1]))) > 0.5, truth[:, 1] > 0.5)


def test_layer_ious_pools_over_samples():
    truth = np.zeros((2, 1, 2, 2))
    truth[0, 0, 0, 0] = 1
    probs = np.zeros((2, 1, 2, 2))
    probs[0, 0, 0, 0] = probs[1, 0, 1, 1] = 0.9  # one hit, one false alarm
    assert calibrate.layer_ious(probs, truth, [0.5])[0, 0] == 0.5


def test_no_samples_is_an_error():
    with pytest.raises(DualPMError, match="no validation samples"):
        calibrate.occupancy_bias(None, [])


def test_fixed_layers_keep_their_threshold():
    probs, truth = _maps(np.random.default_rng(1))
    bias, report = calibrate.choose_bias(probs[:, ::-1], truth, fixed=(0,))  # layer 0 the under-confident one
    assert bias[0] == 0.0 and report["threshold"][0] == 0.5 and report["iou_calibrated"][0] == 0.0
    assert calibrate.FIXED_LAYERS == (0,)  # the animal detector's layer
