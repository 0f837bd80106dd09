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
