"""The in-process ONNX Runtime runner and the shared tensor checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dualpm_addon import inference
from dualpm_addon.errors import DualPMError
from tests.server_fixtures import ROOT, photo, real_model, runner, stand_in_model  # noqa: F401


def test_importing_does_not_load_onnxruntime():
    code = "import sys, dualpm_addon.inference, dualpm_addon.preprocess; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runner_reads_the_contract(runner):
    assert runner.input_size == 160 and runner.layers == 4
    assert runner.providers == ["CPUExecutionProvider"] and runner.device == "cpu"
    assert runner.metadata["model_version"] == "stand-in" and runner.metadata["input_size"] == "160"


def test_predict_shapes_dtypes_and_batching(runner):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    batch = runner.predict(img)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "P": ((2, 4, 160, 160, 3), np.float32), "Q": ((2, 4, 160, 160, 3), np.float32),
        "occupancy": ((2, 4, 160, 160), np.float32), "confidence": ((2, 4, 160, 160), np.float32)}
    one = runner.predict(img[1])
    assert one["P"].shape == (4, 160, 160, 3)
    np.testing.assert_allclose(one["P"], batch["P"][1], rtol=1e-6, atol=1e-6)
    assert batch["occupancy"].min() >= 0 and batch["occupancy"].max() <= 1 and batch["confidence"].min() >= 1


def test_mask_input_bool_and_uint8_agree_and_matter(runner):
    img = np.full((160, 160, 3), 200, np.uint8)
    m = np.zeros((160, 160), bool)
    m[50:100, 20:140] = True
    a = runner.predict(img, m)
    b = runner.predict(img, m.astype(np.uint8) * 255)
    np.testing.assert_array_equal(a["occupancy"], b["occupancy"])
    assert np.all(a["occupancy"][0][m] > 0.99) and np.all(a["occupancy"][0][~m] < 0.01)
    assert runner.predict(img)["occupancy"][0].max() < 0.5  # a blank photo, no mask: nothing there


def test_stand_in_sees_the_horse_silhouette(runner):
    from PIL import Image

    rgb = Image.open(photo("horse.png")).convert("RGB").resize((160, 160), Image.Resampling.LANCZOS)
    rgb = np.asarray(rgb)
    occ = runner.predict(rgb)["occupancy"][0] > 0.5
    dark = rgb.mean(axis=-1) < 100
    iou = (occ & dark).sum() / (occ | dark).sum()
    assert iou > 0.6  # a 9x9 blur rounds off the legs; the body is there


@pytest.mark.parametrize("inputs,reason", [
    ({"image": np.zeros((1, 160, 160, 3), np.uint8)}, "missing input 'mask'"),
    ({"image": np.zeros((1, 160, 160, 3), np.uint8), "mask": np.zeros((1, 160, 160), np.uint8),
      "depth": np.zeros(1)}, "unknown input 'depth'"),
    ({"image": np.zeros((1, 160, 160, 3), np.float32), "mask": np.zeros((1, 160, 160), np.uint8)},
     "input 'image' has datatype FP32, expected UINT8"),
    ({"image": np.zeros((1, 160, 160), np.uint8), "mask": np.zeros((1, 160, 160), np.uint8)},
     "input 'image' has shape [1, 160, 160], expected [N, 160, 160, 3]"),
    ({"image": np.zeros((0, 160, 160, 3), np.uint8), "mask": np.zeros((0, 160, 160), np.uint8)},
     "batch size 0"),
])
def test_check_inputs_reasons(inputs, reason):
    with pytest.raises(DualPMError) as e:
        inference.check_inputs(inputs, 160)
    assert reason in str(e.value)


def test_check_inputs_batch_limit():
    ok = {"image": np.zeros((3, 160, 160, 3), np.uint8), "mask": np.zeros((3, 160, 160), np.uint8)}
    assert inference.check_inputs(ok, 160, max_batch=3) == 3
    with pytest.raises(DualPMError, match="batch size 3 exceeds this server's limit of 2"):
        inference.check_inputs(ok, 160, max_batch=2)


def test_predict_rejects_wrong_crops(runner):
    with pytest.raises(DualPMError, match="the model takes 160x160 crops, got 200x100"):
        runner.predict(np.zeros((100, 200, 3), np.uint8))
    with pytest.raises(DualPMError, match=r"image: expected \(H, W, 3\)"):
        runner.predict(np.zeros((160, 160, 3), np.float32))
    with pytest.raises(DualPMError, match="mask: expected"):
        runner.predict(np.zeros((160, 160, 3), np.uint8), np.zeros((10, 10), np.uint8))


def test_device_choice():
    assert inference.choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert inference.choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert inference.choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]
    with pytest.raises(DualPMError, match="no CUDA execution provider"):
        inference.choose_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(DualPMError, match="device 'tpu'"):
        inference.choose_providers("tpu", [])


def test_cuda_when_present_else_a_clear_error(stand_in_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        r = inference.Runner(stand_in_model, device="cuda")
        assert r.providers[0] == "CUDAExecutionProvider"
        assert r.predict(np.zeros((160, 160, 3), np.uint8))["P"].shape == (4, 160, 160, 3)
    else:
        with pytest.raises(DualPMError, match="device cuda"):
            inference.Runner(stand_in_model, device="cuda")


def test_bad_model_files(tmp_path, stand_in_model):
    with pytest.raises(DualPMError, match="no such file"):
        inference.Runner(str(tmp_path / "none.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(DualPMError, match="bad.onnx: ONNX Runtime cannot load it"):
        inference.Runner(str(bad))
    import onnx

    m = onnx.load(stand_in_model)
    m.graph.output[1].name = "Q_renamed"
    m.graph.node[[n.output[0] for n in m.graph.node].index("Q")].output[0] = "Q_renamed"
    off = tmp_path / "off_contract.onnx"
    onnx.save(m, str(off))
    with pytest.raises(DualPMError, match="off_contract.onnx: has no output 'Q'"):
        inference.Runner(str(off))


def test_default_model_path_explains_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(inference, "DEFAULT_MODEL", str(tmp_path / "dualpm.onnx"))
    with pytest.raises(DualPMError, match="does not exist .*--model FILE"):
        inference.default_model_path()


def test_run_options_terminate(stand_in_model, runner):
    opts = runner.run_options()
    opts.terminate = True
    with pytest.raises(TimeoutError):
        runner.run({"image": np.zeros((1, 160, 160, 3), np.uint8), "mask": np.zeros((1, 160, 160), np.uint8)},
                   run_options=opts)


def test_real_model_meets_the_contract(real_model):
    r = inference.Runner(real_model)
    assert r.input_size == 160 and r.layers == 4
    for key in ("dualpm_version", "model_version", "input_size", "layers"):
        assert key in r.metadata
    out = r.predict(np.zeros((160, 160, 3), np.uint8))
    assert out["P"].shape == (4, 160, 160, 3) and out["confidence"].min() >= 1
