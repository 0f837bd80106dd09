"""The one place where OpenCV camera space meets Blender's world and camera frames.

The core works in the photo's OpenCV camera frame (x right, y down, z forward, metres) and in the
animal's model space (the template's frame: Z up, facing -Y). The scene puts the animal at the
world origin in model space, upright and facing -Y like any Blender character, and places the
camera where the photographer stood: world_from_opencv is the inverse of the fitted
model-to-camera transform. A Blender camera looks down its local -Z with +Y up, which is the
OpenCV frame turned half a turn about X.

Everything here is a few 4x4 products; nothing else in operators/ converts between these frames.
"""

from __future__ import annotations

import numpy as np

# OpenCV camera axes expressed in Blender camera axes: flip y (down -> up) and z (forward -> -Z).
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

SENSOR_MM = 36.0  # the sensor spans the photo's longer side, as in dualpm_addon.camera


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def world_from_opencv(model_to_camera: np.ndarray) -> np.ndarray:
    """4x4 map from the photo's OpenCV camera space to Blender world (the animal's model space)."""
    return rigid_inverse(model_to_camera)


def camera_matrix_world(world_from_cv: np.ndarray) -> np.ndarray:
    """matrix_world of the Blender camera object that sees what the photo's camera saw."""
    return np.asarray(world_from_cv, dtype=np.float64) @ OPENCV_TO_BLENDER_CAMERA


def opencv_points_to_world(points: np.ndarray, world_from_cv: np.ndarray) -> np.ndarray:
    m = np.asarray(world_from_cv, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def camera_settings(k: np.ndarray, width: int, height: int) -> dict:
    """Blender camera data settings for OpenCV intrinsics K on a width x height photo.

    The sensor spans the longer side (sensor_fit HORIZONTAL or VERTICAL, never AUTO, so the
    camera stays right whatever the render aspect); the principal point becomes lens shift, in
    units of the longer side as Blender measures it. Square pixels: fx is used, fy is assumed equal.
    """
    k = np.asarray(k, dtype=np.float64)
    longer = float(max(width, height))
    return {
        "sensor_fit": "HORIZONTAL" if width >= height else "VERTICAL",
        "sensor_width": SENSOR_MM,
        "sensor_height": SENSOR_MM,
        "lens": float(k[0, 0]) * SENSOR_MM / longer,
        "shift_x": (width / 2.0 - float(k[0, 2])) / longer,
        "shift_y": (float(k[1, 2]) - height / 2.0) / longer,
    }


def intrinsics_from_camera(settings: dict, width: int, height: int) -> np.ndarray:
    """The inverse of camera_settings (tests and the export round trip use it)."""
    longer = float(max(width, height))
    f = settings["lens"] / SENSOR_MM * longer
    cx = width / 2.0 - settings["shift_x"] * longer
    cy = height / 2.0 + settings["shift_y"] * longer
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
