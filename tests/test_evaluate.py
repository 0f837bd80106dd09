"""dualpm eval: held-out splits, figures beside the targets, strict JSON and a report picture."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dualpm_addon import cli
from training import dataset as ds
from training import evaluate, export, train
from training.network import DualPMNet, tiny_config


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = DualPMNet(tiny_config())
    train.save_checkpoint(str(d), "ckpt", net, None, {"step": 1})
    path = d / "m.onnx"
    export.export_onnx(train.load_network(str(d / "ckpt.safetensors"), pretrained=False), str(path), "test")
    return path


def test_eval_writes_report_and_picture(model, tmp_path):
    data = tmp_path / "data"
    ds.write_toy_folder(str(data), 2, species="wolf", clip="Walk")  # unseen species
    ds.write_toy_folder(str(data), 2, start=10, species="horse", clip="Gallop_Jump")  # held-out clip
    ds.write_toy_folder(str(data), 2, start=20, species="horse", clip="Walk")  # training split: skipped
    report = tmp_path / "r" / "report.json"
    assert cli.main(["eval", "--model", str(model), "--data", str(data), "--json", str(report)]) == 0
    text = report.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    r = json.loads(text)
    assert set(r["splits"]) == {"heldout_clips", "unseen_species"}
    clips = r["splits"]["heldout_clips"]
    assert clips["samples"] == 2 and set(clips["per_species"]) == {"horse"}
    for mode in ("no_mask", "mask_given"):
        s = clips[mode]
        assert 0 <= s["pck"] <= 1 and 0 <= s["mask_iou"] <= 1 and len(s["layers"]) == 4
    assert set(clips["targets_no_mask"]) == {"pck", "chamfer_cm_horse_scale", "mask_iou"}
    assert clips["targets_no_mask"]["pck"]["target"] == ">= 0.85"
    assert set(r["splits"]["unseen_species"]["targets_no_mask"]) == {"pck"}
    img = Image.open(r["picture"])
    assert img.size[0] == 7 * 160 and img.size[1] > 160


def test_horse_scale_multiplies_by_body_length_ratio(model, tmp_path):
    data = tmp_path / "d"
    ds.write_toy_folder(str(data), 1, species="wolf", clip="Walk")
    sess = evaluate.session(str(model))
    files = {"unseen_species": ds.list_samples(str(data))}
    res, _ = evaluate.evaluate_files(sess, files, {"wolf": 1.2}, progress=False)
    s = res["unseen_species"]["no_mask"]
    if np.isfinite(s["chamfer_cm"]):
        assert abs(s["chamfer_cm_horse_scale"] - s["chamfer_cm"] * 2.4307742714881897 / 1.2) < 1e-6


def test_no_held_out_samples_is_an_error(model, tmp_path):
    data = tmp_path / "d"
    ds.write_toy_folder(str(data), 1, species="horse", clip="Walk")
    assert cli.main(["eval", "--model", str(model), "--data", str(data), "--json", str(tmp_path / "r.json")]) == 2


def test_missing_model_is_an_error(tmp_path):
    data = tmp_path / "d"
    ds.write_toy_folder(str(data), 1, species="wolf", clip="Walk")
    assert cli.main(["eval", "--model", str(tmp_path / "none.onnx"), "--data", str(data),
                     "--json", str(tmp_path / "r.json")]) == 2
