"""benchmarks/bench_fit_quality.py: registered with `dualpm bench`, and one render per set gives
the photo fit's rows beside the 3D fit's, with issue 14's targets."""

from __future__ import annotations

import math
import os

import pytest


def test_registered_with_dualpm_bench():
    from dualpm_addon.commands import bench

    assert "fit_quality" in bench.topics()


def test_one_render_per_set_gives_both_fits_and_the_targets():
    from benchmarks import bench_fit_quality as b
    from dualpm_addon import segment

    if not os.path.isfile(segment.default_path()):
        pytest.skip("run scripts/setup.sh (the segmenter)")
    rows = b.run(quick=True, per_set=1)
    iou = {r["name"]: r for r in rows if r["name"].startswith("rig IoU, ")}
    assert {f"rig IoU, {s}, {i}" for s in ("heldout_clips", "authored") for i in b.INPUTS} == set(iou)
    for r in iou.values():
        assert r["peer"] == "points fit" and 0.0 <= r["value"] <= 1.0 and r["photo_fit"]["n"] == 1
        assert 0.0 <= r["character_rig_iou"] <= 1.0
    assert iou["rig IoU, heldout_clips, seg"]["target"] == 0.85
    assert iou["rig IoU, authored, true"]["target"] == 0.75
    # exact maps: a perfect predictor's rig lands on the animal
    assert iou["rig IoU, heldout_clips, exact"]["value"] > 0.7
    errors = [r for r in rows if r["name"].startswith("joint error, ")]
    assert errors and all(math.isnan(r["value"]) or r["value"] >= 0 for r in errors)
    assert "machine" in rows[0]
