"""dualpm_addon.preview: the batch command's GPU-free preview and its PNG writer."""

import os

import numpy as np
import pytest

from dualpm_addon import preview
from dualpm_addon.errors import DualPMError


def test_png_round_trips_through_pillow(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for channels in (3, 4):
        img = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
        path = str(tmp_path / f"x{channels}.png")
        preview.write_png(path, img)
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), img)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]
    with pytest.raises(DualPMError, match="png"):
        preview.encode_png(np.zeros((4, 4), np.uint8))


def test_nearest_point_wins_the_splat():
    k = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    img = preview.splat(pts, cols, k, 100, radius_px=1)
    centre = img[50, 50]
    assert centre[1] > 150 and centre[0] == 0 and centre[2] == 0  # green: the nearest
    assert tuple(img[5, 5]) == preview.BACKGROUND


def test_render_puts_the_photo_beside_a_novel_view(horse):
    photo = np.full((300, 200, 3), 90, np.uint8)
    pts = horse.vertices
    cols = np.full((len(pts), 3), 220, np.uint8)
    segs = preview.skeleton_segments(horse.skeleton.rest_heads, horse.skeleton.parents)
    img = preview.render(photo, pts, cols, segs, height=240)
    assert img.shape == (240, 160 + 4 + 240, 3)
    right = img[:, -240:]
    drawn = np.any(right != np.array(preview.BACKGROUND, np.uint8), axis=-1)
    assert 0.05 < drawn.mean() < 0.9  # the animal covers part of the view, not all of it
    assert np.any(np.all(right == preview.BONE_COLOUR, axis=-1))  # the skeleton is drawn
    with pytest.raises(DualPMError, match="points"):
        preview.render(photo, np.zeros((0, 3)), cols[:0])


def preview_template(templates_dir):
    from dualpm_addon import template

    return template.load(f"{templates_dir}/horse.npz")


def _near(mask, steps):
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return mask


def test_the_overlay_panel_outlines_the_rig_where_the_animal_is(templates_dir):
    from dualpm_addon import silhouette
    from tests.test_metrics import _posed_truth

    s, verts, faces = _posed_truth(templates_dir, "horse", 3)
    photo = np.asarray(s["rgb"], np.uint8)
    skeleton = preview_template(templates_dir).skeleton
    parents = [skeleton.parents[skeleton.index(n)] for n in s["joint_names"]]
    parents = [-1 if p < 0 else list(s["joint_names"]).index(skeleton.joint_names[p]) for p in parents]
    cols = np.full((len(verts), 3), 220, np.uint8)
    before = preview.render(photo, verts, cols, height=320)
    img = preview.render(photo, verts, cols, height=320, overlay_vertices=verts, overlay_faces=faces,
                         overlay_joints=s["joints"], parents=parents,
                         intrinsics=s["intrinsics"])
    assert img.shape == (320, before.shape[1] + 320 + 4, 3)  # a photo-sized panel more
    np.testing.assert_array_equal(img[:, -320:], before[:, -320:])  # today's novel view, unchanged
    panel = img[:, 324:644]
    cyan = np.all(panel == preview.OUTLINE_COLOUR, axis=-1)
    # The photo is 160 px, the panel 320: the true mask doubled is where the animal is.
    truth = np.repeat(np.repeat(s["mask"], 2, 0), 2, 1)
    edge = silhouette.outline(truth)
    assert cyan.sum() > 0.8 * edge.sum()  # a 2-px ring along the whole outline
    assert np.all(_near(edge, 3)[cyan])  # and nowhere else
    assert np.any(np.all(panel == preview.BONE_COLOUR, axis=-1)[truth])  # bones inside the animal
    inside = truth & ~_near(edge, 3)
    assert np.abs(panel[inside].astype(int) - np.repeat(np.repeat(photo, 2, 0), 2, 1)[inside]).mean() > 5  # tinted
    with pytest.raises(DualPMError, match="overlay"):
        preview.render(photo, verts, cols, overlay_vertices=verts)


def test_overlay_of_a_reconstruction_draws_its_fit_through_its_camera(templates_dir):
    from dualpm_addon import metrics, pipeline
    from tests.test_metrics import _posed_truth

    s, _, _ = _posed_truth(templates_dir, "horse", 3)
    pm = {k: np.nan_to_num(np.asarray(s[k], np.float32)) for k in ("P", "Q", "occupancy")}
    pm.update(confidence=np.where(pm["occupancy"] > 0, 3.0, 1.0).astype(np.float32), intrinsics=s["intrinsics"],
              crop_box=np.array([0, 0, 160, 160], np.float32), focal_from_exif=True)
    photo = np.asarray(s["rgb"], np.uint8)
    rec = pipeline.from_pointmap(pm, pipeline.PhotoInput(photo, None, None, "horse.png"),
                                 template=preview_template(templates_dir))
    panel = preview.overlay(photo, rec)
    assert panel.shape == photo.shape
    cyan = np.all(panel == preview.OUTLINE_COLOUR, axis=-1)
    assert cyan.sum() > 50 and _near(s["mask"], 4)[cyan].mean() > 0.9  # on the animal's outline
    assert metrics.rig_iou(rec.fit.posed_vertices, rec.fit.faces, rec.photo_intrinsics, s["mask"]) > 0.5
    with pytest.raises(DualPMError, match="reconstruction"):
        preview.overlay(photo[:80], rec)
