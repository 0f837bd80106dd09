"""operators/camera_frame.py: the one OpenCV <-> Blender frame conversion (its agreement with
Blender's own camera projection is tested in bpy: test_operators_blender.py, scenario camera)."""

import numpy as np

from dualpm_addon import camera
from operators import camera_frame


def test_camera_settings_round_trip_landscape_and_portrait():
    for w, h in ((1024, 768), (600, 900)):
        k = camera.intrinsics_from_focal_mm(35.0, w, h, principal=(w / 2 + 13.5, h / 2 - 7.25))
        s = camera_frame.camera_settings(k, w, h)
        assert s["sensor_fit"] == ("HORIZONTAL" if w >= h else "VERTICAL")
        assert abs(s["lens"] - 35.0) < 1e-9
        np.testing.assert_allclose(camera_frame.intrinsics_from_camera(s, w, h), k, atol=1e-9)


def test_blender_camera_looks_down_minus_z_with_y_up():
    rng = np.random.default_rng(0)
    a = rng.normal(size=3)
    from dualpm_addon.rotations import matrix_from_axis_angle

    m = np.eye(4)
    m[:3, :3] = matrix_from_axis_angle(a)
    m[:3, 3] = rng.normal(size=3)
    world_from_cv = camera_frame.world_from_opencv(m)
    cam = camera_frame.camera_matrix_world(world_from_cv)
    # a point straight ahead of the OpenCV camera is on the Blender camera's -Z axis
    ahead = camera_frame.opencv_points_to_world(np.array([[0.0, 0.0, 2.0]]), world_from_cv)[0]
    local = np.linalg.inv(cam) @ np.append(ahead, 1.0)
    np.testing.assert_allclose(local[:3], [0, 0, -2], atol=1e-12)
    # image "down" (+y OpenCV) is the Blender camera's -Y
    below = camera_frame.opencv_points_to_world(np.array([[0.0, 1.0, 2.0]]), world_from_cv)[0]
    np.testing.assert_allclose((np.linalg.inv(cam) @ np.append(below, 1.0))[:3], [0, -1, -2], atol=1e-12)
    # world_from_opencv undoes model_to_camera
    np.testing.assert_allclose(world_from_cv @ m, np.eye(4), atol=1e-12)
