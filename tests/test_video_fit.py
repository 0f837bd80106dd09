"""The clip fit (dualpm_addon.video.fit_clip) on short synthetic clips with exact maps
(training/clips.py): accuracy, one shape, lost frames bridged, several animals, a still animal
under a moving camera, progress, cancel and the one-line errors."""

import json

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.pipeline import Cancelled
from dualpm_addon.video import ClipOptions, fit_clip
from training import clips

OPTIONS = ClipOptions(fps=24.0, keyframes=2)


@pytest.fixture(scope="module")
def walk(templates_dir):
    frames = clips.render_clip(templates_dir, "horse", "Walk", seed=1, count=6, backgrounds_dir=None)
    return frames, [clips.exact_frame(f) for f in frames]


@pytest.fixture(scope="module")
def walk_fit(walk, horse):
    reports = []
    fit = fit_clip(walk[1], horse, OPTIONS, report=lambda s, f: reports.append((s, f)))
    return fit, reports


def test_exact_maps_joint_error_and_one_shape(walk, walk_fit, horse):
    frames, _ = walk
    fit, _ = walk_fit
    t = len(frames)
    assert fit.rotations.shape == (t, len(fit.joint_names), 4) and fit.model_to_camera.shape == (t, 4, 4)
    assert fit.intrinsics.shape == (t, 3, 3) and fit.tracked.all() and not fit.bridged.any()
    err = clips.joint_errors(fit.joints_cam, fit.joint_names, frames, horse.body_length)
    assert err.mean() < 3.0, err
    # One shape: every bone keeps its length in every frame (zero by construction).
    assert clips.bone_length_variation(fit.joints_cam, fit.parents) < 1e-9
    assert np.nanmin(fit.rig_iou) > 0.8


def test_posed_vertices_and_json(walk_fit):
    fit, _ = walk_fit
    v = fit.posed_vertices(3)
    assert v.shape == (len(fit.rest_vertices), 3) and np.all(v[:, 2] > 0)
    # The skinned mesh follows the joints: its centre is near the joints' centre, frame by frame.
    assert np.linalg.norm(v.mean(0) - fit.joints_cam[3].mean(0)) < 0.3 * fit.body_length
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["frames"] == 6 and d["frames_tracked"] == 6 and len(d["per_frame"]) == 6
    assert d["timings_s"]["total"] > 0 and d["per_frame"][0]["tracked"] is True


def test_progress_reported_per_frame(walk_fit):
    _, reports = walk_fit
    stages = {s for s, _ in reports}
    assert {"observe", "shape", "track"} <= stages
    track = [f for s, f in reports if s == "track"]
    assert len(track) == 6 and track == sorted(track) and track[-1] == pytest.approx(1.0)


def test_lost_frames_are_bridged_not_dropped(walk, horse):
    frames, maps = walk
    gappy = [None] + maps[1:3] + [None] + maps[4:]
    fit = fit_clip(gappy, horse, OPTIONS)
    assert fit.num_frames == 6
    assert list(fit.tracked) == [False, True, True, False, True, True]
    assert list(fit.bridged) == [True, False, False, True, False, False]
    assert np.isnan(fit.rig_iou[[0, 3]]).all()
    # The gap's pose lies between its neighbours'; the clip's start holds the first seen pose.
    j = fit.joints_cam
    mid = 0.5 * (j[2] + j[4])
    assert np.linalg.norm(j[3] - mid, axis=1).mean() < 0.05 * fit.body_length
    assert np.allclose(j[0], j[1])


def test_several_animals_follows_the_first_choice(walk, horse, templates_dir):
    frames, maps = walk
    other = [clips.exact_frame(f) for f in clips.render_clip(templates_dir, "cow", "Eating", seed=5, count=6,
                                                             backgrounds_dir=None)]
    # Frame 0 offers the walking horse first (the default choice); later frames list the cow first.
    cands = [[maps[0], other[0]]] + [[o, m] for o, m in zip(other[1:], maps[1:])]
    fit = fit_clip(cands, horse, OPTIONS)
    err = clips.joint_errors(fit.joints_cam, fit.joint_names, frames, horse.body_length)
    assert fit.tracked.all() and err.mean() < 3.0, err


@pytest.mark.slow
def test_still_animal_moving_camera_gives_a_still_pose(templates_dir, horse):
    frames = clips.render_clip(templates_dir, "horse", "Idle", seed=3, count=8, stride=0, camera="pan_zoom",
                               travel=False, backgrounds_dir=None)
    fit = fit_clip([clips.exact_frame(f) for f in frames], horse, OPTIONS)
    assert clips.pose_jitter_pct(fit.joints_cam, fit.model_to_camera, fit.body_length) <= 0.5
    # The camera's motion went to the root: in camera space the animal swings out with the pan
    # (about 0.3 m at the middle frames) and back, as the true joints do.
    true = np.stack([np.asarray(f["joints"]) for f in frames]).mean(axis=1)
    fitted = fit.joints_cam.mean(axis=1)
    assert np.linalg.norm(true[len(frames) // 2] - true[0]) > 0.2
    assert np.abs(np.linalg.norm(fitted - fitted[0], axis=1) - np.linalg.norm(true - true[0], axis=1)).max() < 0.02


def test_bad_clips_are_one_line_errors(walk, horse):
    with pytest.raises(DualPMError, match="no frames"):
        fit_clip([], horse)
    with pytest.raises(DualPMError, match="no frame of the clip shows an animal") as e:
        fit_clip([None, None, None], horse)
    assert "\n" not in str(e.value)
    empty = dict(walk[1][0], occupancy=np.zeros_like(walk[1][0]["occupancy"]))
    with pytest.raises(DualPMError, match="0 of 2 frames"):
        fit_clip([empty, None], horse)
    with pytest.raises(DualPMError, match="frame 1 is a str"):
        fit_clip([walk[1][0], "frame.png"], horse)


def test_cancel_stops_the_fit(walk, horse):
    with pytest.raises(Cancelled):
        fit_clip(walk[1], horse, OPTIONS, cancelled=lambda: True)


def test_frames_observed_during_inference_give_the_same_fit(walk, walk_fit, horse):
    """fit_clip(observed=FrameObserver) takes the observer's work on the same dicts (fed as
    inference finishes them) and observes the rest itself; the fit is the one without it."""
    from dualpm_addon.video.fit import FrameObserver

    maps = list(walk[1])
    observer = FrameObserver(horse, OPTIONS, frames=len(maps))  # keyframes 0 and 1 when all are seen
    for t in (0, 2, 3, 5):
        observer.submit(t, maps[t])
    observer.submit(4, dict(maps[4]))  # another dict than the fit gets: observed again there
    fit = fit_clip(maps, horse, OPTIONS, observed=observer)
    assert observer.seconds > 0 and set(observer.close()) == {0, 2, 3, 4, 5}
    assert set(observer.keyframe_fits) == {0}  # keyframe 1 was not submitted: the fit made it
    assert np.array_equal(fit.joints_cam, walk_fit[0].joints_cam)
    other = FrameObserver(horse, ClipOptions(fps=24.0, keyframes=2, seed=5))  # other options: not used
    other.submit(0, maps[0])
    assert np.array_equal(fit_clip(maps, horse, OPTIONS, observed=other).joints_cam, walk_fit[0].joints_cam)
    cancelled = FrameObserver(horse, OPTIONS)
    cancelled.cancel()
    assert cancelled.close() == {}
