"""video.infer: a clip's frames through predict_photo with batched predictor runs and tracked
crops, with the shipped model in ONNX Runtime on real frames (pan and zoom over Muybridge's cat,
landscapes without an animal)."""

import os

import numpy as np
import pytest

from dualpm_addon import preprocess
from dualpm_addon.errors import DualPMError
from dualpm_addon.video import infer

from . import video_fixtures as vf
from .conftest import ROOT

MODEL = os.path.join(ROOT, "assets", "dualpm.onnx")
pytestmark = pytest.mark.skipif(not (os.path.isfile(vf.CAT) and os.path.isfile(MODEL)),
                                reason="run scripts/setup.sh (photos, model)")


@pytest.fixture(scope="module")
def runner():
    from dualpm_addon.inference import Runner

    return Runner(MODEL, device="cpu")


@pytest.fixture(scope="module")
def frames():
    return vf.pan_zoom(vf.read_rgb(vf.CAT), 8, (120, 180))


class Counting:
    """The real Runner, counting the crops and batches it is given."""

    def __init__(self, runner):
        self.runner, self.input_size, self.metadata = runner, runner.input_size, runner.metadata
        self.batches = []

    def predict(self, image, mask=None):
        self.batches.append(len(image) if np.ndim(image) == 4 else 1)
        return self.runner.predict(image, mask)


def test_every_frame_alike_predict_photo_one_crop_for_most(runner, frames):
    counting = Counting(runner)
    maps, reasons, stats = infer.predict_frames(counting, frames, keyframe_every=4)
    assert all(m is not None for m in maps), reasons
    keys = [0, 4, 7]  # every 4th and the last take predict_photo itself
    for i in range(len(frames)):
        alone = preprocess.predict_photo(runner, frames[i], None, None, f"frame {i + 1}")
        assert set(maps[i]) == set(alone)
        for k, v in alone.items():
            assert np.shape(maps[i][k]) == np.shape(v) and np.asarray(maps[i][k]).dtype == np.asarray(v).dtype, k
        if i in keys:
            np.testing.assert_allclose(maps[i]["crop_box"], alone["crop_box"], atol=1e-3)
            np.testing.assert_allclose(maps[i]["P"], alone["P"], atol=1e-4)
        else:  # tracked: the crop lands on the same animal, a little elsewhere
            side = alone["crop_box"][2] - alone["crop_box"][0]
            assert np.abs(maps[i]["crop_box"] - alone["crop_box"]).max() < 0.35 * side
            m, a = maps[i]["photo_mask"], alone["photo_mask"]
            assert (m & a).sum() / (m | a).sum() > 0.5
    assert stats["crops"] == sum(counting.batches) < 2 * len(frames)
    assert max(counting.batches) > 1  # batched, not one crop a run
    assert stats["frames_tracked_crop"] + stats["frames_refound"] == 5


def test_masks_take_one_pass_on_their_box(runner, frames):
    mask = np.zeros(frames.shape[1:3], bool)
    mask[20:100, 30:150] = True
    counting = Counting(runner)
    maps, _, stats = infer.predict_frames(counting, frames[:3], [mask, mask, mask])
    assert stats["crops"] == 3
    for m in maps:
        np.testing.assert_allclose(m["crop_box"], preprocess.square_box(preprocess.mask_bbox(mask)), atol=1e-3)
        assert str(m["mask_source"]) == "user"


def test_frames_without_an_animal_are_none_with_the_reason(runner):
    maps, reasons, _ = infer.predict_frames(runner, vf.landscapes(4))
    assert maps == [None] * 4
    assert all(r.startswith("no animal found in frame ") and "\n" not in r for r in reasons), reasons


def test_a_failing_predictor_stops_the_clip(frames):
    from dualpm_addon import client

    dead = client.InferenceClient(url="http://127.0.0.1:9", token="t")  # nothing listens on the discard port
    with pytest.raises(DualPMError, match="cannot reach the inference server"):
        infer.predict_frames(dead, frames[:4])


def test_cancel_stops_between_batches(runner, frames):
    from dualpm_addon.pipeline import Cancelled

    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        infer.predict_frames(runner, frames, cancelled=cancelled)


def test_tracked_boxes_interpolate_between_keyframes():
    boxes = {0: np.array([10.0, 20.0, 40.0]), 4: np.array([30.0, 20.0, 60.0]), 8: None}
    out = infer.tracked_boxes(10, [0, 4, 8], boxes)
    assert sorted(out) == [1, 2, 3, 5, 6, 7, 9]
    np.testing.assert_allclose(out[2], (20 - 25, 20 - 25, 20 + 25, 20 + 25))  # halfway: centre 20, side 50
    np.testing.assert_allclose(out[9], (0, -10, 60, 50))  # past the last keyframe with an animal: held
    assert infer.tracked_boxes(5, [0, 4], {0: None, 4: None}) == {}
