"""ONNX export: the contract's names, dynamic batch, metadata, torch/ONNX Runtime parity <= 1e-3."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dualpm_addon import cli
from dualpm_addon.errors import DualPMError
from training import export, train
from training.network import DualPMNet, tiny_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = DualPMNet(tiny_config())  # the contract's 160x160, random weights
    # non-trivial BatchNorm statistics and weights, so parity is tested on a "trained" net
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.weight.requires_grad:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    train.save_checkpoint(str(d), "ckpt", net, None, {"step": 7})
    out = d / "m.onnx"
    report = d / "parity.json"
    assert cli.main(["export", str(d / "ckpt.safetensors"), "--out", str(out), "--json", str(report),
                     "--no-pretrained"]) == 0
    return net, out, json.loads(report.read_text())


def test_parity_on_cpu_provider(exported):
    _, _, report = exported
    assert report["parity"]["CPUExecutionProvider"]
    assert report["worst_relative"] <= export.PARITY_TOLERANCE


def test_contract_names_types_and_dynamic_batch(exported):
    _, path, _ = exported
    model = onnx.load(str(path))
    ins = {i.name: i for i in model.graph.input}
    outs = {o.name: o for o in model.graph.output}
    assert set(ins) == {"image", "mask"} and set(outs) == {"P", "Q", "occupancy", "confidence"}
    assert ins["image"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert ins["mask"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in ins["image"].type.tensor_type.shape.dim]
    assert dims[1:] == [160, 160, 3] and isinstance(dims[0], str)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        image, mask = export.sample_inputs(n)
        P, Q, occ, conf = sess.run(None, {"image": image, "mask": mask})
        assert P.shape == (n, 4, 160, 160, 3) and Q.shape == (n, 4, 160, 160, 3)
        assert occ.shape == (n, 4, 160, 160) and conf.shape == (n, 4, 160, 160)
        assert occ.min() >= 0 and occ.max() <= 1 and conf.min() >= 1


def test_metadata_props(exported):
    _, path, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["input_size"] == "160" and meta["layers"] == "4"
    assert meta["model_version"] == "ckpt-step7" and meta["dualpm_version"]
    assert meta["occupancy_bias"] == "0.0000,0.0000,0.0000,0.0000"  # not calibrated


def test_parity_of_a_batch_of_three(exported):
    net, path, _ = exported
    figures = export.parity(net, str(path), ["CPUExecutionProvider"], n=3, seed=5)
    assert max(figures["CPUExecutionProvider"].values()) <= export.PARITY_TOLERANCE


def test_bad_output_name(tmp_path):
    with pytest.raises(DualPMError, match="must end in .onnx"):
        export.run(type("A", (), {"out": str(tmp_path / "x.bin"), "checkpoint": "c"})())


def test_calibrated_export_folds_the_bias_into_the_graph(exported, tmp_path):
    from training import dataset as ds

    net, _, _ = exported
    val = tmp_path / "val"
    ds.write_toy_folder(str(val), 3)
    ckpt = tmp_path / "ckpt"
    train.save_checkpoint(str(ckpt), "c", net, None, {"step": 1})
    out, report = tmp_path / "cal.onnx", tmp_path / "cal.json"
    assert cli.main(["export", str(ckpt / "c.safetensors"), "--out", str(out), "--json", str(report),
                     "--no-pretrained", "--calibrate", str(val)]) == 0
    r = json.loads(report.read_text())
    cal = r["occupancy_calibration"]
    assert cal["samples"] == 3 and len(cal["bias"]) == 4 and r["worst_relative"] <= export.PARITY_TOLERANCE
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    bias = np.array([float(v) for v in meta["occupancy_bias"].split(",")])
    assert np.allclose(bias, cal["bias"], atol=1e-4)
    # the graph's occupancy is sigmoid(the network's logit + the layer's bias)
    image, mask = export.sample_inputs(1)
    occ = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["occupancy"], {"image": image, "mask": mask})[0]
    with torch.no_grad():
        logit = net.eval()(torch.from_numpy(image), torch.from_numpy(mask))["occupancy_logit"].numpy()
    assert np.allclose(occ, 1 / (1 + np.exp(-(logit + bias[None, :, None, None]))), atol=1e-4)


def test_calibration_on_an_empty_folder_is_a_one_line_error(exported, tmp_path, capsys):
    net, _, _ = exported
    train.save_checkpoint(str(tmp_path), "c", net, None, {"step": 1})
    (tmp_path / "empty").mkdir()
    code = cli.main(["export", str(tmp_path / "c.safetensors"), "--out", str(tmp_path / "x.onnx"),
                     "--no-pretrained", "--calibrate", str(tmp_path / "empty")])
    assert code != 0 and "holds no .npz samples" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    code = cli.main(["export", str(tmp_path / "c.safetensors"), "--out", str(tmp_path / "x.onnx"),
                     "--no-pretrained", "--calibrate", str(tmp_path / "empty"), "--calibration-samples", "0"])
    assert code != 0 and "--calibration-samples 0: must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
