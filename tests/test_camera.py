import numpy as np

from dualpm_addon import camera


def test_uncrop_inverts_crop_intrinsics():
    k = camera.intrinsics_from_focal_mm(42.0, 1024, 768, principal=(500.3, 390.1))
    box = (210.5, 80.25, 610.5, 480.25)
    crop = camera.crop_intrinsics(k, box, (160, 160))
    np.testing.assert_allclose(camera.uncrop_intrinsics(crop, box, (160, 160)), k, atol=1e-9)


def test_projection_lands_on_pixel_centres():
    k = camera.intrinsics_from_focal_mm(50.0, 64, 48)
    rays = camera.pixel_rays(k, 48, 64)
    uv = camera.project(rays * 3.7, k)
    np.testing.assert_allclose(uv, camera.pixel_centers(48, 64), atol=1e-9)


def test_look_at_puts_the_target_on_the_optical_axis():
    m = camera.look_at(np.array([3.0, -4.0, 1.5]), np.array([0.0, 0.0, 0.5]))
    p = m[:3, :3] @ np.array([0.0, 0.0, 0.5]) + m[:3, 3]
    assert np.allclose(p[:2], 0) and p[2] > 0
    # Z up in the world looks up in the image (OpenCV y points down).
    up = m[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert up[1] < 0
