"""Authored lying and sitting poses (dualpm_addon/fitting/poses.py): their rotations, their use as
photo-fit hypotheses, and the synthesizer rendering them (training/poses.authored_pose)."""

from __future__ import annotations

import numpy as np
import pytest

from dualpm_addon import fitting as fs
from dualpm_addon import metrics, pointmap
from dualpm_addon.errors import DualPMError
from dualpm_addon.fitting import hypotheses, poses
from dualpm_addon.rotations import quat_to_matrix


def test_authored_rotations_are_rotations_and_left_right_mirrors(horse):
    sk = horse.skeleton
    for name, local, tilt in poses.authored_poses(sk):
        np.testing.assert_allclose(local @ np.swapaxes(local, 1, 2), np.tile(np.eye(3), (sk.num_joints, 1, 1)),
                                   atol=1e-9)
        np.testing.assert_allclose(tilt @ tilt.T, np.eye(3), atol=1e-12)
        for j, n in enumerate(sk.joint_names):
            m = fs.mirror_name(n)
            if m and n.endswith(".L") and m in sk.joint_names:
                mirrored = fs.mirror_rotation(sk, j, sk.index(m), local[j])
                np.testing.assert_allclose(mirrored, local[sk.index(m)], atol=1e-9, err_msg=f"{name} {n}")


def test_authored_poses_are_hypotheses(horse):
    names = [n for n, _, _ in hypotheses.pose_hypotheses(horse)]
    assert {"lying_belly", "lying_tucked", "sitting", "lying_side", "standing"} <= set(names)


def test_sitting_raises_the_head_end_and_lying_lowers_the_back(horse):
    from training import poses as synth_poses

    sk = horse.skeleton
    rest = sk.forward_kinematics(sk.rest_pose())[:, :3, 3]
    sit = synth_poses.authored_pose(horse, "sitting")
    lie = synth_poses.authored_pose(horse, "lying_belly")
    heads = {p.clip: sk.forward_kinematics(p.rotations, p.root_translation)[:, :3, 3] for p in (sit, lie)}
    neck, back = sk.index("Neck1"), sk.index("Back")
    rise = lambda h: h[neck, 2] - h[back, 2]  # noqa: E731
    assert rise(heads["authored:sitting"]) > rise(rest) + 0.3
    # Lying: the back sits lower above the ground than when standing, by a good part of the leg.
    assert heads["authored:lying_belly"][back, 2] < rest[back, 2] - 0.3
    for p in (sit, lie):  # on the ground, not under it
        v = horse.pose_vertices(p.rotations, p.root_translation)
        assert abs(v[:, 2].min()) < 1e-6


def test_authored_pose_carries_onto_another_species(templates_dir):
    from dualpm_addon import template
    from training import poses as synth_poses

    wolf = template.load(f"{templates_dir}/wolf.npz")
    p = synth_poses.authored_pose(wolf, "sitting")
    r = quat_to_matrix(p.rotations)
    assert np.all(np.isfinite(r)) and p.clip == "authored:sitting"
    with pytest.raises(DualPMError, match="no authored pose"):
        synth_poses.authored_pose(wolf, "handstand")


@pytest.fixture(scope="module")
def authored_renders(templates_dir):
    from training.synthesize import SynthConfig, Synthesizer

    synth = Synthesizer(templates_dir, size=160, layers=4, species=["horse"],
                        config=SynthConfig(closeup_probability=0.0, authored_probability=1.0), exclude_clips=[])
    return [synth.sample(s) for s in (1, 2)]


def test_synthesizer_renders_authored_poses(authored_renders):
    for a in authored_renders:
        assert str(a["clip"]).startswith("authored:")
        assert a["mask"].sum() > 200


def test_photo_fit_lands_on_a_lying_or_sitting_animal(authored_renders):
    from training.evaluate import true_map

    ctx = fs.prepare()
    for a in authored_renders:
        mask = np.asarray(a["mask"], bool)
        pts = pointmap.extract_points(true_map(a), 0.5, -np.inf)
        f = fs.fit_to_photo(pts, a["intrinsics"], mask, ctx, focal_known=True)
        iou = metrics.rig_iou(f.posed_vertices, f.faces, f.intrinsics, mask)
        assert iou >= 0.75, (str(a["clip"]), iou, f.photo["hypothesis"])


def test_lying_and_sitting_are_modes_of_the_pose_prior(horse):
    """The prior term centred on an authored pose costs nothing there, and the clips' Gaussian
    would have charged it heavily (the reason the fit kept standing rigs for lying animals)."""
    from dualpm_addon.fitting import terms
    from dualpm_addon.fitting.chain import ChainModel
    from dualpm_addon.rotations import matrix_to_quat, quat_to_axis_angle

    ctx = fs.prepare()
    free = np.nonzero(~ctx.fixed)[0]
    model = ChainModel(ctx, free, np.tile(np.eye(3), (horse.skeleton.num_joints, 1, 1)), photo=True)
    term = terms.PosePriorTerm(model, 1.0)
    assert {"lying_belly", "lying_tucked", "sitting"} <= hypotheses.prior_modes()
    for name, local, _ in poses.authored_poses(horse.skeleton):
        aa = quat_to_axis_angle(matrix_to_quat(local))
        x = np.zeros(model.n_params)
        x[7:model.col_scale] = aa[free].ravel()
        assert np.abs(term.centred(aa).residuals(x)).max() < 1e-9
        assert np.linalg.norm(term.residuals(x)) > 5.0, name  # several sigma from the clips' mean
