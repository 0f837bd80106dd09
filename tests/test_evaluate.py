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


def test_fit_joint_error_of_the_whole_pipeline(model, templates_dir, tmp_path):
    from dualpm_addon import fitting, template
    from tests.fit_fixtures import horse_render
    from training.synthesize import save_sample

    a = horse_render(templates_dir)
    path = str(tmp_path / "s.npz")
    save_sample(path, a)
    joints = evaluate.sample_joints(path)
    assert joints is not None and joints[0].shape == (len(joints[1]), 3)
    length = template.load(f"{templates_dir}/horse.npz").body_length
    ctx = fitting.prepare()
    exact = evaluate.true_map(a)
    good = evaluate.fit_joint_error(exact, joints, length, ctx, exact=True)
    assert good < 5.0  # the fit on a perfect map: a few % of body length
    wrong = dict(exact, Q=exact["Q"][:, ::-1].copy())  # upside-down canonical map: a bad predictor
    assert evaluate.fit_joint_error(wrong, joints, length, ctx, exact=True) > 2 * good
    empty = dict(exact, occupancy=np.zeros_like(exact["occupancy"]))
    assert np.isnan(evaluate.fit_joint_error(empty, joints, length, ctx))  # no animal: a failure

    # the report carries the figure for the model's maps and for the true ones
    sess = evaluate.session(str(model))
    res, _ = evaluate.evaluate_files(sess, {"heldout_clips": [path]}, {"horse": length}, progress=False)
    r = res["heldout_clips"]
    assert abs(r["true_maps"]["fit_joint_error_pct"] - good) < 1e-9
    assert "fit_joint_error_pct" in r["no_mask"] and r["no_mask"]["fit_failures"] in (0, 1)


def test_rig_iou_of_every_fit_mode_per_split_and_species(model, templates_dir, tmp_path, monkeypatch):
    from dualpm_addon import fitting, template
    from tests.fit_fixtures import horse_render
    from training.synthesize import save_sample

    a = horse_render(templates_dir)
    path = str(tmp_path / "s.npz")
    save_sample(path, a)
    joints = evaluate.sample_joints(path)
    length = template.load(f"{templates_dir}/horse.npz").body_length
    ctx = fitting.prepare()
    exact = evaluate.true_map(a)
    good = evaluate.run_fits(exact, a, joints, length, ctx, exact=True)
    assert list(good) == list(evaluate.FIT_MODES) and list(good)[0] == "p_only"
    for fig in good.values():
        assert fig["rig_iou"] > 0.9 and fig["fit_joint_error_pct"] < 5.0  # the template on its own render
    wrong = evaluate.run_fits(dict(exact, Q=exact["Q"][:, ::-1].copy()), a, joints, length, ctx, exact=True)
    # A bad map: the 3D fits' rig lands off the animal; the photo fits hold the outline (that is
    # their point: the mask, not Q, places the rig), so there it shows in IoU less and in joints.
    for m in good:
        assert wrong[m]["rig_iou"] < good[m]["rig_iou"] - (0.5 if m in ("p_only", "pipeline_points") else 0.1), m
        assert wrong[m]["fit_joint_error_pct"] > 10 * good[m]["fit_joint_error_pct"], m

    # The hook: one more entry in FIT_MODES is one more column everywhere, its failures counted.
    monkeypatch.setitem(evaluate.FIT_MODES, "finds_nothing", lambda maps, sample, context, exact=False: None)
    sess = evaluate.session(str(model))
    res, _ = evaluate.evaluate_files(sess, {"heldout_clips": [path]}, {"horse": length}, progress=False)
    r = res["heldout_clips"]
    assert abs(r["true_maps"]["rig_iou"] - good["p_only"]["rig_iou"]) < 1e-9
    assert abs(r["true_maps"]["fits"]["pipeline"]["rig_iou"] - good["pipeline"]["rig_iou"]) < 1e-9
    for where in (r["no_mask"], r["mask_given"], r["true_maps"], r["per_species"]["horse"],
                  r["per_species"]["horse"]["mask_given"], r["per_species"]["horse"]["true_maps"]):
        assert set(where["fits"]) == set(evaluate.FIT_MODES) >= {"p_only", "pipeline", "finds_nothing"}
        assert where["fits"]["finds_nothing"]["fit_failures"] == 1 and np.isnan(where["fits"]["finds_nothing"]["rig_iou"])
        iou = where["fits"]["p_only"]["rig_iou"]
        assert np.isnan(iou) or 0.0 <= iou <= 1.0  # an untrained model's map may give no fit
        assert abs(where["rig_iou"] - iou) < 1e-12 or (np.isnan(where["rig_iou"]) and np.isnan(iou))
    lines = evaluate.fit_table(r)
    assert any(line.split()[:1] == ["pipeline"] for line in lines) and any("horse finds_nothing" in x for x in lines)
    assert f"{good['p_only']['rig_iou']:.3f}" in next(x for x in lines if x.split()[:1] == ["p_only"])


def test_photo_look_reports_the_quokkas_rig_iou_and_overlay(tmp_path):
    import os

    from tests.conftest import ROOT, cache_path

    out = evaluate.photo_look(os.path.join(ROOT, "assets", "dualpm.onnx"), cache_path("photos"), str(tmp_path))
    q = out["quokka.jpg"]
    # the shipped model's reconstruction lands on the quokka, if not well: the figure is in range
    assert 0.2 < q["rig_iou"] <= 1.0 and 0.2 < q["rig_iou_mask_given"] <= 1.0
    img = np.asarray(Image.open(q["overlay_picture"]).convert("RGB"))
    assert img.shape[0] == 480 and np.all(img == (0, 255, 255), axis=-1).sum() > 500
    assert "rig_iou" not in out["chelsea.png"]  # no true mask, no rig IoU
