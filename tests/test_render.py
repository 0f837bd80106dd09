"""Shading, coat patterns, backgrounds, shadows and camera effects (training/render.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dualpm_addon import camera
from dualpm_addon.errors import DualPMError
from training import render


def test_colour_conversions_round_trip():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(render.linear_to_srgb(render.srgb_to_linear(x)), x, atol=1e-5)
    rgb = np.random.default_rng(0).uniform(0, 1, (50, 3))
    np.testing.assert_allclose(render._hsv_to_rgb(render._rgb_to_hsv(rgb)), rgb, atol=1e-9)


def test_box_filter_is_a_block_mean():
    a = np.random.default_rng(1).uniform(size=(8, 6, 3))
    np.testing.assert_allclose(render.box_filter(a, 2), a.reshape(4, 2, 3, 2, 3).mean(axis=(1, 3)))


def test_coat_materials_skip_eyes_and_hooves(horse):
    coat = render.coat_materials(horse)
    names = dict(zip(horse.material_names, coat))
    assert names["Main"] and not names["Hooves"] and not any(v for k, v in names.items() if "Eye" in k)


@pytest.mark.parametrize("seed", range(6))
def test_patterns_are_functions_of_q_only(horse, seed):
    coat = render.coat_materials(horse)
    look = render.sample_look(horse, coat, np.random.default_rng(seed))
    q = horse.canonical_vertices[:500]
    mat = horse.face_material[:500] % len(horse.material_names)
    a = render.albedo(mat, q, look)
    b = render.albedo(mat, q.copy(), look)
    np.testing.assert_array_equal(a, b)  # the same body point has the same colour, whatever the pose
    assert a.shape == (500, 3) and np.all((a >= 0) & (a <= 1))
    w = render.pattern_weight(q, look)
    assert np.all((w >= 0) & (w <= 1))


def test_spots_cover_their_centres_and_not_far_away(horse):
    coat = render.coat_materials(horse)
    look = render.sample_look(horse, coat, np.random.default_rng(0))
    look = render.Look(colors=look.colors, coat=coat, pattern="spots", pattern_color=np.zeros(3),
                       centres=np.array([[0.0, 0.0, 1.0]]), radius=0.1, softness=0.01)
    w = render.pattern_weight(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.5]]), look)
    np.testing.assert_allclose(w, [1.0, 0.0])


def test_sun_lights_facing_surfaces_and_shadow_removes_it():
    light = render.Light(sun=np.array([0, 0, 1.0]), sun_rgb=np.ones(3), sky_rgb=np.full(3, 0.2),
                         ground_rgb=np.full(3, 0.05))
    n = np.array([[0, 0, 1.0], [0, 0, -1.0], [0, 0, 1.0]])
    out = render.shade(np.ones((3, 3)), n, np.array([0, 0, 1.0]), light.sun, light, lit=np.array([1, 1, 0.0]))
    assert out[0, 0] > out[2, 0] > out[1, 0]  # lit > shadowed (sky only) > facing the ground


def test_backgrounds_folder_and_crops(tmp_path):
    with pytest.raises(DualPMError, match="no such backgrounds folder"):
        render.Backgrounds(str(tmp_path / "missing"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    bg = render.Backgrounds(str(tmp_path))
    assert len(bg) == 1 and bg.name(0) == "a.jpg"
    c1 = bg.crop(0, 32, 48, np.random.default_rng(5))
    c2 = bg.crop(0, 32, 48, np.random.default_rng(5))
    assert c1.shape == (32, 48, 3) and c1.dtype == np.float32 and np.all((c1 >= 0) & (c1 <= 1))
    np.testing.assert_array_equal(c1, c2)
    assert len(render.Backgrounds(None)) == 0


def _camera(size=48):
    k = camera.intrinsics_from_focal_mm(35, size, size)
    w2c = camera.look_at([4.0, 0.0, 1.5], [0.0, 0.0, 0.5])
    return k, w2c


def test_procedural_background_has_sky_above_the_true_horizon():
    k, w2c = _camera()
    dirs = render.ray_directions_world(k, w2c, 48, 48)
    img = render.procedural_background(np.random.default_rng(2), dirs, camera_height=1.5)
    assert img.shape == (48, 48, 3) and img.dtype == np.float32 and np.all((img >= 0) & (img <= 1))
    again = render.procedural_background(np.random.default_rng(2), dirs, camera_height=1.5)
    np.testing.assert_array_equal(img, again)
    # The camera looks down: the top rows see the sky (rays rising), the bottom rows the ground.
    assert dirs[0, :, 2].max() > 0 > dirs[-1, :, 2].max()


def test_contact_shadow_lies_under_the_animal():
    k, w2c = _camera(64)
    dirs = render.ray_directions_world(k, w2c, 64, 64)
    eye = -w2c[:3, :3].T @ w2c[:3, 3]
    rng = np.random.default_rng(3)
    body = rng.uniform([-0.5, -0.2, 0.0], [0.5, 0.2, 1.0], (400, 3))
    s = render.contact_shadow(dirs, eye, body, np.array([0, 0, 1.0]), 0.0, softness=0.05)
    under = camera.project(np.array([[0.0, 0.0, 0.0]]) @ w2c[:3, :3].T + w2c[:3, 3], k)[0]
    far = camera.project(np.array([[-3.0, 2.0, 0.0]]) @ w2c[:3, :3].T + w2c[:3, 3], k)[0]
    assert s[int(under[1]), int(under[0])] > 0.3
    if 0 <= far[0] < 64 and 0 <= far[1] < 64:
        assert s[int(far[1]), int(far[0])] < 0.05
    assert np.all(s[dirs[..., 2] >= 0] == 0)  # no shadow in the sky


def test_occluders_and_camera_effects_are_deterministic():
    rgb = np.random.default_rng(4).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    a, ma = render.occluders(rgb, np.random.default_rng(9), mask, count=3)
    b, mb = render.occluders(rgb, np.random.default_rng(9), mask, count=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert ma.any() and a.dtype == np.uint8
    changed = np.abs(a.astype(int) - rgb).sum(-1) > 0
    assert changed[ma].mean() > 0.8 and changed[~ma].mean() < 0.2  # only the shapes (and their edges)
    e1 = render.camera_effects(rgb, np.random.default_rng(1))
    e2 = render.camera_effects(rgb, np.random.default_rng(1))
    np.testing.assert_array_equal(e1, e2)
    assert e1.shape == rgb.shape and e1.dtype == np.uint8 and not np.array_equal(e1, rgb)
