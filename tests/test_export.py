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


def test_parity_of_a_batch_of_three(exported):
    net, path, _ = exported
    figures = export.parity(net, str(path), ["CPUExecutionProvider"], n=3, seed=5)
    assert max(figures["CPUExecutionProvider"].values()) <= export.PARITY_TOLERANCE


def test_bad_output_name(tmp_path):
    with pytest.raises(DualPMError, match="must end in .onnx"):
        export.run(type("A", (), {"out": str(tmp_path / "x.bin"), "checkpoint": "c"})())
