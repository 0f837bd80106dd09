"""Evaluation metrics on hand-made cases."""

import numpy as np

from dualpm_addon import metrics, template


def _map(seed=0, k=4, n=16):
    r = np.random.default_rng(seed)
    occ = np.zeros((k, n, n), np.float32)
    occ[:, 4:12, 3:13] = 1
    occ[2:, 4:12, 3:6] = 0
    return {"P": r.normal(0, 0.5, (k, n, n, 3)).astype(np.float32) + np.array([0, 0, 5], np.float32),
            "Q": r.normal(0, 0.5, (k, n, n, 3)).astype(np.float32),
            "occupancy": occ, "confidence": np.full((k, n, n), 5.0, np.float32)}


def test_identical_maps_give_pck_1_chamfer_0_iou_1():
    m = _map()
    fig = metrics.evaluate(m, m)
    assert fig["pck"] == 1.0 and fig["chamfer_cm"] == 0.0 and fig["chamfer_aligned_cm"] < 1e-9 and fig["mask_iou"] == 1.0
    assert all(layer["occupancy_iou"] == 1.0 and layer["chamfer_cm"] == 0.0 for layer in fig["layers"])


def test_pck_counts_points_within_a_tenth_of_body_length():
    t = _map()
    p = {k: v.copy() for k, v in t.items()}
    vis = t["occupancy"][0] > 0.5
    rows = np.nonzero(vis)
    half = len(rows[0]) // 2
    p["Q"][0][rows[0][:half], rows[1][:half]] += np.array([0.3, 0, 0], np.float32)  # 0.3 m > 0.243 m
    p["Q"][0][rows[0][half:], rows[1][half:]] += np.array([0.2, 0, 0], np.float32)  # 0.2 m < 0.243 m
    assert metrics.pck(p, t) == half / len(rows[0])


def test_chamfer_of_a_shifted_cloud_is_the_shift_and_alignment_removes_shift_and_scale():
    r = np.random.default_rng(1)
    a = r.normal(0, 1, (500, 3))
    b = a + np.array([0.0, 0.0, 0.02])
    assert abs(metrics.chamfer_cm(b, a) - 2.0) < 1e-9
    assert metrics.chamfer_cm(b, a, scale=2.0) == metrics.chamfer_cm(b, a) * 2.0
    c = (a - a.mean(0)) * 1.7 + np.array([1.0, -2.0, 3.0])
    assert metrics.chamfer_cm(c, a) > 50 and metrics.chamfer_cm(c, a, aligned=True) < 1e-6


def test_chamfer_empty_sets():
    assert metrics.chamfer_cm(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    assert metrics.chamfer_cm(np.zeros((0, 3)), np.ones((4, 3))) == float("inf")


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert metrics.mask_iou(a, b) == 4 / 12
    assert metrics.mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_low_confidence_points_are_not_kept():
    m = _map()
    p = {k: v.copy() for k, v in m.items()}
    p["confidence"][:] = 1.5
    assert metrics.evaluate(p, m)["points_kept"] == 0


def test_reference_body_length_is_the_horse_template():
    t = template.load_default()
    assert abs(metrics.REFERENCE_BODY_LENGTH - float(np.ptp(t.canonical_vertices[:, 1]))) < 1e-6


def test_summarise_skips_non_finite():
    m = _map()
    good = metrics.evaluate(m, m)
    bad = dict(good, chamfer_cm=float("inf"))
    s = metrics.summarise([good, bad])
    assert s["chamfer_cm"] == 0.0 and s["chamfer_failures"] == 1 and s["samples"] == 2


def test_joint_error_is_zero_up_to_translation_and_scale_and_measures_a_moved_joint():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(10, 3))
    names = tuple(f"j{i}" for i in range(10))
    assert metrics.joint_error_pct(2.0 * true + [1, 2, 3], names, true, names, 1.0) < 1e-9
    moved = true.copy()
    moved[0] += [0.0, 0.0, 0.5]
    e = metrics.joint_error_pct(moved, names, true, names, 2.0)
    assert 1.0 < e < 5.0  # about 0.5 / 10 joints / 2 m, spread a little by the re-alignment
    # only shared names count, in either order
    assert metrics.joint_error_pct(true[::-1], names[::-1], true, names, 1.0) < 1e-9
    assert np.isnan(metrics.joint_error_pct(true[:2], names[:2], true, names, 1.0))
    assert np.isnan(metrics.joint_error_pct(true, tuple("abcdefghij"), true, names, 1.0))


def test_summarise_counts_failed_fits():
    m = _map()
    good = dict(metrics.evaluate(m, m), fit_joint_error_pct=2.0)
    bad = dict(good, fit_joint_error_pct=float("nan"))
    s = metrics.summarise([good, bad])
    assert s["fit_joint_error_pct"] == 2.0 and s["fit_failures"] == 1
    assert "fit_joint_error_pct" not in metrics.summarise([metrics.evaluate(m, m)])


def _posed_truth(templates_dir, species, seed):
    """A synthetic render and its species' template mesh posed as the render's ground truth
    (pose, model_to_world, extrinsics), in the render's camera space."""
    from dualpm_addon import skinning
    from training.synthesize import SynthConfig, Synthesizer

    synth = Synthesizer(templates_dir, size=160, layers=2, species=[species],
                        config=SynthConfig(closeup_probability=0.0), exclude_clips=[], backgrounds_dir=None)
    s = synth.sample(seed)
    t = template.load(f"{templates_dir}/{species}.npz")
    frames = t.skeleton.forward_kinematics(s["rotations"].astype(np.float64), s["root_translation"].astype(np.float64),
                                           offsets=s["offsets"].astype(np.float64))
    model = skinning.linear_blend_skinning(t.vertices, t.skin_joints, t.skin_weights, t.skeleton.skinning_matrices(frames))
    m2c = s["extrinsics"].astype(np.float64) @ s["model_to_world"].astype(np.float64)
    return s, model @ m2c[:3, :3].T + m2c[:3, 3], t.faces


def test_rig_iou_of_the_true_posed_mesh_through_the_true_camera(templates_dir):
    for species, seed in (("horse", 3), ("wolf", 7)):
        s, verts, faces = _posed_truth(templates_dir, species, seed)
        assert s["mask"].sum() > 200
        good = metrics.rig_iou(verts, faces, s["intrinsics"], s["mask"])
        assert good >= 0.98  # the ray caster and the rasterizer test the same pixel centres
        # the same rig a tenth of a body length to the side, or seen through the wrong focal length
        shift = 0.1 * float(np.ptp(verts[:, 0])) * np.array([1.0, 0.0, 0.0])
        assert metrics.rig_iou(verts + shift, faces, s["intrinsics"], s["mask"]) < good - 0.1
        k = np.array(s["intrinsics"], np.float64)
        k[:2, :2] *= 1.3
        assert metrics.rig_iou(verts, faces, k, s["mask"]) < good - 0.1


def test_rig_iou_needs_a_two_dimensional_mask():
    import pytest

    from dualpm_addon.errors import DualPMError

    with pytest.raises(DualPMError, match="mask"):
        metrics.rig_iou(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.eye(3), np.zeros((2, 2, 2), bool))
