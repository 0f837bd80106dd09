"""The U^2-Net-p segmenter (real ONNX Runtime on assets/u2netp.onnx) and how predict_photo uses it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dualpm_addon import image_io, preprocess, segment
from dualpm_addon.errors import DualPMError
from tests.server_fixtures import blob_photo, photo, real_model, runner, stand_in_model  # noqa: F401

QUOKKA_MIN_IOU = 0.90  # measured 0.953 (docs/segmentation.md)


@pytest.fixture(scope="module")
def seg():
    if not os.path.isfile(segment.default_path()):
        pytest.fail(f"{segment.default_path()} is missing: run `bash scripts/setup.sh` "
                    "(scripts/data/segmenter.sh) first", pytrace=False)
    return segment.load()


def constant_segmenter(path, saliency: np.ndarray, size: int = segment.INPUT_SIZE) -> str:
    """A real ONNX model with U^2-Net-p's input that always answers `saliency` (320 x 320)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(saliency.astype(np.float32)[None, None], "const")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Mul", ["input.1", "zero"], ["z"]),
             helper.make_node("ReduceSum", ["z", "axes"], ["z1"], keepdims=1),
             helper.make_node("Add", ["z1", "const"], ["out"])]
    graph = helper.make_graph(nodes, "constant",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, size, size])],
                              [const, zero, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def quokka():
    rgb = image_io.read_photo(photo("quokka.jpg")).rgb
    poly = [(p["x"], p["y"]) for p in json.load(open(photo("quokka_annotations.json")))["polygons"][0]["keypoints"]]
    im = Image.new("L", (rgb.shape[1], rgb.shape[0]), 0)
    ImageDraw.Draw(im).polygon(poly, fill=255)
    return rgb, np.asarray(im) > 127


def two_blob_photo():
    img = blob_photo(600, 900, (80, 150, 380, 400))
    img[blob_photo(600, 900, (560, 250, 760, 400))[..., 0] == 60] = (60, 40, 30)
    return img


def test_default_path_is_in_assets():
    assert segment.default_path() == os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(segment.__file__))),
                                                  "assets", "u2netp.onnx")


def test_quokka_mask_matches_its_outline(seg):
    rgb, true = quokka()
    regions = segment.animal_regions(seg.mask(rgb))
    assert len(regions) == 1 and iou(regions[0], true) > QUOKKA_MIN_IOU


def test_chelsea_saliency_and_mask(seg):
    rgb = image_io.read_photo(photo("chelsea.png")).rgb
    sal = seg.saliency(rgb)
    assert sal.shape == rgb.shape[:2] and sal.dtype == np.float32
    assert sal.min() == pytest.approx(0.0, abs=1e-3) and sal.max() == pytest.approx(1.0, abs=1e-3)
    m = seg.mask(rgb)
    assert m.dtype == bool and 0.3 < m.mean() < 0.95  # the cat's face fills most of the photo
    assert np.array_equal(m, sal > 0.5)


def test_nothing_salient_gives_an_empty_mask(seg):
    grey = np.full((120, 200, 3), 128, np.uint8)  # min-max scaling alone would make noise a mask
    assert not seg.mask(grey).any()
    with pytest.raises(DualPMError, match=r"segmenter: expected an \(H, W, 3\) uint8 image"):
        seg.mask(np.zeros((10, 10), np.uint8))


def test_animal_regions_two_blobs_largest_first():
    m = np.zeros((100, 100), bool)
    m[60:80, 60:80] = True   # 400 px
    m[5:35, 5:35] = True     # 900 px
    m[35, 35] = True         # touches the big one diagonally: 8-connected
    m[90:92, 5:7] = True     # 4 px of speckle
    regions = segment.animal_regions(m, min_fraction=0.01)
    assert [int(r.sum()) for r in regions] == [901, 400]
    assert regions[0][20, 20] and regions[1][70, 70] and not regions[0][91, 6]
    assert [int(r.sum()) for r in segment.animal_regions(m, min_fraction=0.05)] == [901]
    assert len(segment.animal_regions(m, min_fraction=0.0)) == 3
    assert segment.animal_regions(np.zeros((10, 10), bool)) == []


def test_missing_file_is_a_one_line_error(tmp_path):
    path = str(tmp_path / "nope.onnx")
    with pytest.raises(DualPMError, match=r"^segmenter .*nope\.onnx does not exist: run scripts/setup\.sh") as e:
        segment.load(path)
    assert "\n" not in str(e.value)


def test_corrupt_file_is_a_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "u2netp.onnx"
    bad.write_bytes(os.urandom(1000))
    with pytest.raises(DualPMError, match=r"^segmenter .*u2netp\.onnx is corrupt \(ONNX Runtime cannot load it") as e:
        segment.load(str(bad))
    assert "\n" not in str(e.value) and "scripts/setup.sh" in str(e.value)
    # the default file is checked by size and hash: damage that still parses is caught too
    bad.write_bytes(b"\0" * segment.FILE_SIZE)
    monkeypatch.setattr(segment, "DEFAULT_PATH", str(bad))
    with pytest.raises(DualPMError, match=r"is corrupt \(its size or sha256 is not U\^2-Net-p's\): "
                                          r"run scripts/setup\.sh"):
        segment.load()


def test_another_model_is_refused(tmp_path):
    path = constant_segmenter(tmp_path / "small.onnx", np.zeros((160, 160)), size=160)
    with pytest.raises(DualPMError, match=r"is not U\^2-Net-p \(inputs \[\[1, 3, 160, 160\]\]"):
        segment.load(path)


def test_predict_photo_on_a_render_uses_the_segmenter(seg, real_model):
    from dualpm_addon.inference import Runner
    from training.synthesize import SynthConfig, Synthesizer

    synth = Synthesizer(None, size=160, layers=4, species=["horse"], backgrounds_dir=None,
                        config=SynthConfig(closeup_probability=0.0, occluder_probability=0.0, cut_probability=0.0))
    sample = synth.sample(1)
    r = preprocess.predict_photo(Runner(real_model, device="cpu"), sample["rgb"], segmenter=seg, source="render")
    assert str(r["mask_source"]) == "segmenter" and int(r["animals_found"]) == 1
    assert r["photo_mask"].shape == (160, 160) and iou(r["photo_mask"], sample["mask"]) > 0.85  # measured 0.96


@pytest.mark.parametrize("case", ["empty", "whole frame", "elsewhere"])
def test_unusable_segmenter_mask_falls_back_to_the_predictor(tmp_path, runner, case):
    sal = {"empty": np.full((320, 320), 0.05), "whole frame": np.ones((320, 320)),
           "elsewhere": np.zeros((320, 320))}[case]
    sal[:60, :60] = {"empty": 0.0, "whole frame": 0.0, "elsewhere": 1.0}[case]
    seg = segment.load(constant_segmenter(tmp_path / "c.onnx", sal))
    img = blob_photo()
    r = preprocess.predict_photo(runner, img, segmenter=seg, source="blob.png")
    assert str(r["mask_source"]) == "predictor" and int(r["animals_found"]) == 1
    animal = np.any(img != img[0, 0], axis=-1)
    assert iou(r["photo_mask"], animal) > 0.85  # the stand-in's own layer 0 (0.89 in its grid), mapped back


def test_segmenter_never_finds_an_animal_the_predictor_does_not_see(seg, runner):
    with pytest.raises(DualPMError, match=r"^no animal found in grey\.png"):
        preprocess.predict_photo(runner, np.full((300, 400, 3), 128, np.uint8), segmenter=seg, source="grey.png")


def test_two_animals(seg, runner):
    img = two_blob_photo()
    masks = preprocess.animal_masks(seg, img, runner, "two.png")
    assert len(masks) == 2 and masks[0].sum() > masks[1].sum()
    assert masks[0][275, 230] and masks[1][325, 660]
    one = preprocess.predict_photo(runner, img, segmenter=seg, source="two.png")
    assert str(one["mask_source"]) == "segmenter" and int(one["animals_found"]) == 2
    assert np.array_equal(one["photo_mask"], masks[0])
    for m in masks:  # --all-animals: one reconstruction per region
        r = preprocess.predict_photo(runner, img, m, mask_source="segmenter", animals_found=len(masks),
                                     source="two.png")
        x0, y0, x1, y1 = r["crop_box"]
        ys, xs = np.nonzero(m)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        assert x1 - x0 < 1.5 * max(np.ptp(xs), np.ptp(ys))
        assert int(r["animals_found"]) == 2 and str(r["mask_source"]) == "segmenter"
    empty_box = np.zeros(img.shape[:2], bool)
    empty_box[10:60, 10:60] = True  # a "region" with no animal in it
    with pytest.raises(DualPMError, match="predictor sees no animal in the segmenter's region"):
        preprocess.predict_photo(runner, img, empty_box, mask_source="segmenter", source="two.png")


def test_default_threads_take_the_cores_other_work_leaves_free(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for busy, want in ((0.0, 2), (0.4, 2), (1.0, 1), (3.0, 1)):
        monkeypatch.setattr(segment, "busy_cores", lambda b=busy: b)
        assert segment.default_threads() == want
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(segment, "busy_cores", lambda: 2.0)
    assert segment.default_threads() == 4
    monkeypatch.undo()
    assert segment.busy_cores() >= 0.0
    assert segment.load(threads=1).threads == 1
