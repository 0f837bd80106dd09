"""The character's shape solve (dualpm_addon.character.deform) on real reconstructions: exact
dual point maps of synthesizer renders of a species the template is not (the wolf) and of the
horse, through pipeline.from_pointmap with the render's mask."""

import numpy as np
import pytest

from dualpm_addon import metrics, pipeline
from dualpm_addon import template as template_mod
from dualpm_addon.character import deform, load_character, operators, quality, repair
from dualpm_addon.errors import DualPMError


def _render(templates_dir, species, seed):
    from training.synthesize import SynthConfig, Synthesizer

    synth = Synthesizer(templates_dir, size=160, layers=4, species=[species],
                        config=SynthConfig(closeup_probability=0.0, cut_probability=0.0, occluder_probability=0.0),
                        exclude_clips=[])
    return synth.sample(seed)


def _reconstruct(sample):
    from training.evaluate import true_map

    pm = true_map(sample)
    size = pm["P"].shape[1:3]
    pm.update(crop_box=np.array([0.0, 0.0, size[1], size[0]]), photo_size=np.array(size), focal_from_exif=True,
              photo_mask=np.asarray(sample["mask"], bool))
    photo = pipeline.PhotoInput(np.asarray(sample["rgb"]), None, None, "render.png")
    return pipeline.from_pointmap(pm, photo, template=template_mod.load_default(),
                                  settings=pipeline.Settings(confidence_threshold=-np.inf, character="template"))


def _true_surface(templates_dir, sample):
    t = template_mod.load(f"{templates_dir}/{sample['species']}.npz")
    v = t.pose_vertices(np.asarray(sample["rotations"], np.float64), np.asarray(sample["root_translation"], np.float64),
                        np.asarray(sample["offsets"], np.float64))
    m2w, w2c = np.asarray(sample["model_to_world"], np.float64), np.asarray(sample["extrinsics"], np.float64)
    v = v @ m2w[:3, :3].T + m2w[:3, 3]
    return v @ w2c[:3, :3].T + w2c[:3, 3], t.faces


@pytest.fixture(scope="module")
def wolf(templates_dir):
    s = _render(templates_dir, "wolf", 5)
    return s, _reconstruct(s)


def test_deformed_wolf_is_closer_to_the_true_wolf(templates_dir, wolf):
    sample, rec = wolf
    report = {}
    shaped = deform.build(rec, report=report)
    before = repair.instance_rest(load_character(rec.template), rec.template, rec.fit)
    tv, tf = _true_surface(templates_dir, sample)
    truth = metrics.surface_samples(tv, tf, 20000, seed=1)
    c_before = metrics.chamfer_cm(metrics.surface_samples(deform.posed(before, rec.fit), before.faces, 20000), truth)
    c_after = metrics.chamfer_cm(metrics.surface_samples(deform.posed(shaped, rec.fit), shaped.faces, 20000), truth)
    assert c_after < 0.8 * c_before, (c_before, c_after, report)
    # The outline through the photo's camera lines up at least as well as before.
    mask = np.asarray(sample["mask"], bool)
    iou_before = metrics.rig_iou(deform.posed(before, rec.fit), before.faces, rec.photo_intrinsics, mask)
    iou_after = metrics.rig_iou(deform.posed(shaped, rec.fit), shaped.faces, rec.photo_intrinsics, mask)
    assert iou_after >= iou_before - 0.01, (iou_before, iou_after)
    assert report["silhouette"] and report["point_vertices"] > 500 and report["rim_vertices"] > 100


def test_deformed_mesh_stays_clean_and_animatable(wolf):
    _, rec = wolf
    base = load_character(rec.template)
    shaped = deform.build(rec)
    assert shaped.vertices.shape == base.vertices.shape and np.array_equal(shaped.faces, base.faces)
    assert np.array_equal(shaped.skin_joints, base.skin_joints) and np.allclose(shaped.skin_weights.sum(1), 1)
    assert np.array_equal(shaped.uv, base.uv) and np.array_equal(shaped.mirror, base.mirror)
    # Split copies of one welded vertex still coincide: the surface has no cracks.
    w = shaped.welded_vertices()
    assert np.abs(w[shaped.weld] - shaped.vertices).max() < 1e-9
    assert quality.is_closed_manifold(shaped.welded_faces)
    before = repair.instance_rest(base, rec.template, rec.fit)
    n_before = quality.self_intersections(before.welded_vertices(), before.welded_faces)
    assert quality.self_intersections(w, shaped.welded_faces) <= n_before
    # No per-vertex noise: the displacement is smooth (its one-ring average explains it).
    d = w - before.welded_vertices()
    e = quality.edges(shaped.welded_faces)[0]
    nb = np.zeros_like(d)
    np.add.at(nb, e[:, 0], d[e[:, 1]])
    np.add.at(nb, e[:, 1], d[e[:, 0]])
    deg = np.bincount(e.ravel(), minlength=len(d))[:, None]
    rough = np.sqrt(np.mean(np.sum((d - nb / deg) ** 2, axis=1)))
    assert rough < 0.1 * np.sqrt(np.mean(np.sum(d**2, axis=1))), rough


def test_hidden_side_follows_its_twin(wolf):
    _, rec = wolf
    char = load_character(rec.template)
    pts = rec.points
    left = np.asarray(pts["Q"])[:, 0] > 0.02  # evidence on the animal's left only
    sub = {k: np.asarray(v)[left] for k, v in pts.items()}
    shaped = deform.deform(char, rec.template, rec.fit, sub["P_observed"], sub["Q"], rec.point_skin_joints[left],
                           rec.point_skin_weights[left], rec.point_matched[left])
    before = repair.instance_rest(char, rec.template, rec.fit)
    d = shaped.vertices - before.vertices
    side = char.canonical[:, 0]
    big = (side > 0.05) & (np.linalg.norm(d, axis=1) > 0.01)
    assert big.sum() > 50
    twin = d[char.mirror[big]] * [-1, 1, 1]
    # The right side (no evidence) moved like the left, mirrored: the same direction, most of the way.
    cos = np.sum(twin * d[big], axis=1) / (np.linalg.norm(twin, axis=1) * np.linalg.norm(d[big], axis=1) + 1e-12)
    assert np.median(cos) > 0.8
    assert np.median(np.linalg.norm(twin, axis=1) / np.linalg.norm(d[big], axis=1)) > 0.4


def test_no_evidence_leaves_the_instance_rest(wolf):
    _, rec = wolf
    char = load_character(rec.template)
    shaped = deform.deform(char, rec.template, rec.fit)
    before = repair.instance_rest(char, rec.template, rec.fit)
    assert np.abs(shaped.vertices - before.vertices).max() < 1e-9


def test_a_mask_of_almost_nothing_is_ignored_and_bad_input_is_one_line(wolf):
    _, rec = wolf
    char = load_character(rec.template)
    tiny = np.zeros_like(rec.photo_mask)
    tiny[80, 80] = True
    report = {}
    shaped = deform.deform(char, rec.template, rec.fit, mask=tiny, intrinsics=rec.photo_intrinsics, report=report)
    assert not report["silhouette"] and np.all(np.isfinite(shaped.vertices))
    with pytest.raises(DualPMError, match="intrinsics"):
        deform.deform(char, rec.template, rec.fit, mask=rec.photo_mask)
    with pytest.raises(DualPMError, match="skin"):
        deform.deform(char, rec.template, rec.fit, np.asarray(rec.points["P"]), np.asarray(rec.points["Q"]))
    with pytest.raises(DualPMError, match="shape"):
        char.with_vertices(char.vertices[:10])


def test_an_animal_cut_by_the_frame_is_not_pulled_to_the_frame(wolf):
    """Cut the mask at a column through the body: the rim there must not move to the cut."""
    _, rec = wolf
    char = load_character(rec.template)
    cols = np.nonzero(rec.photo_mask.any(axis=0))[0]
    cut = int(np.median(cols))
    mask = rec.photo_mask[:, cut:]
    k = rec.photo_intrinsics.copy()
    k[0, 2] -= cut
    frame = deform.mask_frame(mask, k, 256)
    assert frame is not None
    small, _, known = frame
    # The photo's edge (the first column) is not a known outline.
    assert small.shape == known.shape and not known[:, : small.shape[1] // 10].all()
    report = {}
    deform.deform(char, rec.template, rec.fit, mask=mask, intrinsics=k, report=report)
    assert report["silhouette"]


def test_solver_is_built_once_per_template(wolf):
    _, rec = wolf
    assert operators.solver(rec.template) is operators.solver(rec.template)


def _scaled_fit(template, bone_scales: dict, part_thickness: dict, global_scale: float = 0.9):
    """A stand-in for a fit's shape (what instance_rest reads): bone scales by name prefix and
    thickness by body part (fitting.PARTS)."""
    from types import SimpleNamespace

    from dualpm_addon.fitting import PARTS, scaled_rest_skeleton
    from dualpm_addon.fitting.rig import body_parts

    sk = template.skeleton
    s = np.ones(sk.num_joints)
    for prefix, v in bone_scales.items():
        s[[j for j, n in enumerate(sk.joint_names) if n.startswith(prefix)]] = v
    parts = body_parts(sk)
    t = np.ones(sk.num_joints)
    for p, (name, _) in enumerate(PARTS):
        t[parts == p] = part_thickness.get(name, 1.0)
    return SimpleNamespace(global_scale=global_scale, bone_scales=s, thickness=t,
                           rest_skeleton=scaled_rest_skeleton(sk, global_scale, s))


@pytest.mark.parametrize("scales, thickness", [
    # a short tail (a deer's on the horse template) swings into the rump, narrow hips cross the thighs
    ({"Tail": 0.6, "BackShoulder": 0.4}, {"trunk": 1.3, "tail": 0.7, "back_legs": 1.2}),
    # thick neck and trunk beside a thin head and thin legs
    ({"Tail1": 0.5, "Neck3": 0.5}, {"trunk": 1.4, "neck": 1.4, "head": 0.75, "back_legs": 0.8, "front_legs": 0.8}),
])
def test_instance_rest_of_strongly_scaled_parts_does_not_cut_itself(scales, thickness):
    t = template_mod.load_default()
    char = load_character(t)
    fit = _scaled_fit(t, scales, thickness)
    plain = repair.instance_rest(char, t, fit, repair_rounds=0)
    n_plain = quality.self_intersections(plain.welded_vertices(), plain.welded_faces)
    assert n_plain > 20  # the per-bone maps alone fold these parts into each other
    report = {}
    rest = repair.instance_rest(char, t, fit, report=report)
    assert quality.self_intersections(rest.welded_vertices(), rest.welded_faces) == 0  # exact search
    assert quality.is_closed_manifold(rest.welded_faces)
    # The repair is local: most of the surface keeps the fit's map exactly, and nothing moves far.
    move = np.linalg.norm(rest.vertices - plain.vertices, axis=1)
    assert np.mean(move == 0.0) > 0.6, np.mean(move == 0.0)
    assert move.max() < 0.1 * t.body_length * fit.global_scale, move.max()
    assert 0 < report["rest_repair"]["vertices_held"] < 0.4 * char.num_welded


def test_instance_rest_of_a_clean_instance_is_the_fits_map():
    t = template_mod.load_default()
    char = load_character(t)
    fit = _scaled_fit(t, {"Neck": 1.2, "FrontUpperLeg": 1.1}, {"trunk": 1.1})
    plain = repair.instance_rest(char, t, fit, repair_rounds=0)
    assert quality.self_intersections(plain.welded_vertices(), plain.welded_faces) == 0
    assert np.array_equal(repair.instance_rest(char, t, fit).vertices, plain.vertices)
