"""dualpm_addon.pipeline: the bpy-free half of Reconstruct from photo (the Blender side is tested
in test_operators_blender.py)."""

import threading
import time

import numpy as np
import pytest

from dualpm_addon import pipeline
from dualpm_addon.errors import DualPMError


def test_unskin_inverts_linear_blend_skinning(horse):
    rng = np.random.default_rng(1)
    clip = horse.clip("Gallop")
    rot = clip.rotations[7]
    sk = horse.skeleton
    idx = rng.choice(len(horse.vertices), 500, replace=False)
    joints, weights = horse.skin_joints[idx], horse.skin_weights[idx]
    from dualpm_addon.skinning import linear_blend_skinning

    posed = linear_blend_skinning(horse.vertices[idx], joints, weights,
                                  sk.skinning_matrices(sk.forward_kinematics(rot)))
    rest = pipeline.unskin(posed, sk, rot, joints, weights)
    np.testing.assert_allclose(rest, horse.vertices[idx], atol=1e-9)


def test_model_version_from_runner_or_server_metadata():
    class Meta:
        def __init__(self, m):
            self.metadata = m

    assert pipeline.model_version(Meta({"model_version": "7"})) == "7"
    assert pipeline.model_version(Meta({"name": "dualpm", "parameters": {"model_version": "8"}})) == "8"
    assert pipeline.model_version(Meta(None)) == "unknown"


def test_from_pointmap_refuses_a_map_with_too_few_points(horse):
    h = w = 16
    pm = {"P": np.zeros((4, h, w, 3), np.float32), "Q": np.zeros((4, h, w, 3), np.float32),
          "occupancy": np.zeros((4, h, w), np.float32), "confidence": np.ones((4, h, w), np.float32),
          "intrinsics": np.eye(3, dtype=np.float32)}
    photo = pipeline.PhotoInput(np.zeros((h, w, 3), np.uint8), None, None, "empty.png")
    with pytest.raises(DualPMError, match="no animal found in empty.png"):
        pipeline.from_pointmap(pm, photo, template=horse)


def test_stage_fraction_is_monotone_over_the_stages():
    values = [pipeline.stage_fraction(s, f) for s in pipeline.STAGES for f in (0.0, 0.5, 1.0)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0


def test_job_reports_progress_result_and_errors():
    gate = threading.Event()

    def work(report, cancelled):
        report("fit", 0.25)
        gate.wait(5)
        return 42

    job = pipeline.Job(work).start()
    for _ in range(100):
        if job.progress() == ("fit", 0.25):
            break
        time.sleep(0.01)
    assert job.progress() == ("fit", 0.25) and not job.done
    with pytest.raises(RuntimeError, match="still running"):
        job.result()
    gate.set()
    assert job.wait(5) and job.result() == 42

    def boom(report, cancelled):
        raise DualPMError("photo.jpg: no animal found")

    job = pipeline.Job(boom).start()
    assert job.wait(5)
    with pytest.raises(DualPMError, match="no animal found"):
        job.result()
    assert "DualPMError" in job.traceback


def test_job_cancel_sets_the_flag_and_runs_the_hooks_promptly():
    hooked = threading.Event()

    def work(report, cancelled):
        while not cancelled():
            time.sleep(0.005)
        raise pipeline.Cancelled("cancelled")

    job = pipeline.Job(work)
    job.add_cancel_hook(hooked.set)
    job.add_cancel_hook(lambda: 1 / 0)  # a failing hook does not stop the cancel
    job.start()
    t = time.perf_counter()
    job.cancel()
    # prompt: the worker polls every 5 ms; 1 s leaves room for a loaded CI machine
    assert job.wait(2) and time.perf_counter() - t < 1.0
    assert hooked.is_set() and job.cancelled
    with pytest.raises(pipeline.Cancelled):
        job.result()


def test_from_pointmap_fits_with_the_predicted_map_prior_and_records_it(horse):
    from dualpm_addon import fitting as fit_skeleton
    from tests import fit_fixtures as fx

    pm = fx.to_point_map(fx.sample_scene(horse, clip="Eating", frame=20, seed=8, size=64), size=64, layers=4)
    pm["confidence"] = np.where(pm["occupancy"] > 0, 3.0, 1.0).astype(np.float32)
    pm["crop_box"] = np.array([0, 0, 64, 64], np.float32)
    photo = pipeline.PhotoInput(np.zeros((64, 64, 3), np.uint8), None, None, "horse.png")
    rec = pipeline.from_pointmap(pm, photo, template=horse)
    assert rec.settings["pose_weight"] == fit_skeleton.PREDICTED_POSE_WEIGHT
    rec = pipeline.from_pointmap(pm, photo, template=horse, settings=pipeline.Settings(pose_weight=0.002))
    assert rec.settings["pose_weight"] == 0.002


def test_photo_grid_seen_frees_only_past_the_edges_the_animal_touches():
    """The crop reaches past the photo on the left and the bottom; the animal touches the left
    edge only: past the left edge the mask knows nothing, past the bottom it is background."""
    from dualpm_addon import pipeline as pl

    mask = np.zeros((100, 200), bool)
    mask[40:80, 0:60] = True  # cut by the left edge, ends 20 rows above the bottom
    seen = pl.photo_grid_seen((-20.0, 20.0, 80.0, 120.0), mask, 10)  # 10 photo pixels per grid pixel
    assert seen.shape == (10, 10)
    assert not seen[:, :2].any()  # x < 0: past the edge the animal touches
    assert seen[:, 2:].all()  # the photo, and past the bottom (y >= 100, rows 8 and 9)
    assert pl.photo_grid_seen((0, 0, 10, 10), None, 10) is None
    mask[40:80, 0] = False  # now it ends one pixel short of the edge: all known
    assert pl.photo_grid_seen((-20.0, 20.0, 80.0, 120.0), mask, 10).all()
