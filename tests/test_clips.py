"""Synthetic clips with ground truth (training/clips.py) and their figures."""

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from training import clips


@pytest.fixture(scope="module")
def walk(templates_dir):
    return clips.render_clip(templates_dir, "horse", "Walk", seed=2, count=5, backgrounds_dir=None)


def test_frames_are_consecutive_and_share_the_look(walk):
    assert [int(f["frame"]) for f in walk] == [0, 1, 2, 3, 4]
    assert all(f["rgb"].shape == (160, 160, 3) and f["P"].shape == (4, 160, 160, 3) for f in walk)
    # One camera and one background: pixels away from the animal in both frames are the same.
    away = ~(walk[0]["mask"] | walk[1]["mask"])
    diff = np.abs(walk[0]["rgb"].astype(int) - walk[1]["rgb"].astype(int))[away]
    assert np.median(diff) <= 2
    # The animal moves: joints change from frame to frame.
    assert np.linalg.norm(walk[0]["joints"] - walk[4]["joints"], axis=1).max() > 0.05


def test_travel_plants_the_feet(walk):
    contacts, leg = clips.true_contacts(walk, float(walk[0]["clip_fps"]))
    assert contacts.any()
    truth = np.stack([f["joints"] for f in walk]).astype(np.float64)
    names = [str(n) for n in walk[0]["joint_names"]]
    # Feet on the ground barely move (the clip walks on the spot; travel moves it over the ground).
    assert clips.foot_slide_pct(truth, names, contacts, leg) < 3.0


def test_still_animal_pan_zoom(templates_dir):
    frames = clips.render_clip(templates_dir, "horse", "Idle", seed=0, count=4, stride=0, camera="pan_zoom",
                               travel=False, backgrounds_dir=None)
    world = np.stack([f["joints_world"] for f in frames])
    assert np.abs(world - world[0]).max() < 1e-6  # the animal holds still in the world
    cam = np.stack([f["joints"] for f in frames])
    assert np.abs(cam - cam[0]).max() > 0.01  # the camera moves
    assert frames[-1]["intrinsics"][0, 0] > 1.2 * frames[0]["intrinsics"][0, 0]  # and zooms


def test_figures():
    t = np.arange(6, dtype=np.float64)
    pts = np.zeros((6, 2, 3))
    pts[:, :, 0] = t[:, None] * 0.1  # steady motion: no acceleration
    assert clips.jitter_pct(pts, 1.0) == pytest.approx(0.0, abs=1e-12)
    pts[3, 0, 1] += 0.01
    assert clips.jitter_pct(pts, 1.0) > 0
    parents = np.array([-1, 0])
    assert clips.bone_length_variation(pts, parents) > 0
    exact = np.zeros((6, 2, 3))
    exact[:, :, 0] = t[:, None] * 0.1
    exact[:, 1] += [0, 0, 1.0]  # a rigid bone moving along
    assert clips.bone_length_variation(exact, parents) == pytest.approx(0.0, abs=1e-12)


def test_still_photo_clip():
    rgb = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    mask = np.zeros((120, 200), bool)
    mask[40:80, 60:140] = True
    frames, masks = clips.still_photo_clip(rgb, count=5, out_size=(64, 64), mask=mask)
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3) and masks[0].shape == (64, 64)
    assert masks[-1].mean() > masks[0].mean()  # zoomed in: the animal fills more of the frame


def test_bad_requests(templates_dir):
    with pytest.raises(DualPMError, match="camera"):
        clips.render_clip(templates_dir, "horse", "Walk", camera="dolly", count=2)
    with pytest.raises(DualPMError, match="do not fit"):
        clips.render_clip(templates_dir, "horse", "Walk", start=25, count=10)
