"""video.motion and video.preview on a clip fit built from the shipped template: a known pose per
frame and a camera that moves round the animal, so every output's joints are known exactly."""

import numpy as np
import pytest

from dualpm_addon import bvh, gltf_write, template
from dualpm_addon.rotations import matrix_from_axis_angle, quat_from_axis_angle
from dualpm_addon.video import motion, preview
from dualpm_addon.video.fit import ClipFit

T = 5


@pytest.fixture(scope="module")
def clip():
    tpl = template.load_default()
    sk = tpl.skeleton
    rng = np.random.default_rng(3)
    j = sk.num_joints
    rot = np.tile(np.array([1.0, 0, 0, 0]), (T, j, 1))
    for t in range(T):
        axes = rng.normal(size=(j, 3))
        rot[t] = quat_from_axis_angle(axes / np.linalg.norm(axes, axis=1, keepdims=True) * 0.2 * np.sin(t + 1))
    m2c = np.zeros((T, 4, 4))
    for t in range(T):  # the camera pans and closes in; the animal faces across the view
        m2c[t] = np.eye(4)
        m2c[t, :3, :3] = matrix_from_axis_angle(np.array([0.3 + 0.05 * t, 0.8 - 0.1 * t, 0.1]))
        m2c[t, :3, 3] = [0.1 * t, 0.05, 4.0 - 0.2 * t]
    g = sk.forward_kinematics(rot)
    joints = np.einsum("tij,tkj->tki", m2c[:, :3, :3], g[..., :3, 3]) + m2c[:, None, :3, 3]
    k = np.array([[200.0, 0, 90], [0, 200.0, 60], [0, 0, 1]])
    return ClipFit(joint_names=list(sk.joint_names), parents=np.asarray(sk.parents), rest_skeleton=sk, rotations=rot,
                   model_to_camera=m2c, intrinsics=np.tile(k, (T, 1, 1)), tracked=np.ones(T, bool),
                   bridged=np.array([False, False, True, False, False]), rig_iou=np.full(T, np.nan),
                   joints_cam=joints, faces=tpl.faces, skin_joints=tpl.skin_joints, skin_weights=tpl.skin_weights,
                   global_scale=1.0, bone_scales=np.ones(j), thickness=np.ones(j), timings={},
                   rest_vertices=tpl.vertices)


def test_world_motion_puts_the_first_camera_still_and_the_rest_in_the_root(clip):
    w = motion.world_motion(clip, 12.0)
    heads = motion.joints_world(clip, w)
    m0_inv = motion.rigid_inverse(clip.model_to_camera[0])
    want = clip.joints_cam @ m0_inv[:3, :3].T + m0_inv[:3, 3]
    np.testing.assert_allclose(heads, want, atol=1e-9)
    np.testing.assert_allclose(w.rotations[:, 1:], clip.rotations[:, 1:])  # the legs keep their own motion
    np.testing.assert_allclose(np.linalg.norm(w.rotations, axis=-1), 1.0, atol=1e-12)
    # Frame 0: the animal where the template puts it (no root offset).
    np.testing.assert_allclose(w.root_translation[0], 0.0, atol=1e-12)


def test_bvh_and_glb_carry_the_world_motion(clip, tmp_path):
    w = motion.world_motion(clip, 12.0)
    heads = motion.joints_world(clip, w)
    path = tmp_path / "clip.bvh"
    bvh.write(str(path), motion.to_bvh(clip, w))
    back = bvh.read(str(path))
    assert back.frame_time == pytest.approx(1 / 12) and sorted(back.joint_names) == sorted(clip.joint_names)
    idx = [list(back.joint_names).index(n) for n in clip.joint_names]  # BVH lists joints depth first
    size = np.ptp(heads.reshape(-1, 3), axis=0).max()
    assert np.abs(back.world_positions()[:, idx] - heads).max() / size < 1e-5
    gltf, blob = gltf_write.read_glb(motion.glb_bytes(clip, w, "cat"))
    anim = gltf["animations"][0]
    assert anim["name"] == "cat motion"
    times = gltf_write.accessor_array(gltf, blob, anim["samplers"][0]["input"]).ravel()
    np.testing.assert_allclose(times, np.arange(T) / 12.0, atol=1e-6)


def test_preview_is_the_video_beside_the_overlay(clip, tmp_path):
    from dualpm_addon.video import decode

    frames = np.full((T, 120, 180, 3), 128, np.uint8)
    path = str(tmp_path / "clip.mp4")
    preview.write_preview(path, frames, clip, 12.0)
    back = decode.read(path)
    assert len(back) == T and back.size == (120, 364)
    right = back.frames[:, :, 184:].astype(int)
    assert np.abs(right - 128).max(axis=-1).mean() > 1  # the rig is drawn
    orange = np.abs(back.frames[2, 1, 200:340].astype(int) - preview.BRIDGED_COLOUR).max(axis=-1)
    assert np.median(orange) < 40  # the bridged frame is framed in orange
    assert np.abs(back.frames[1, 1, 200:340].astype(int) - preview.BRIDGED_COLOUR).max(axis=-1).min() > 40
    s = preview.strip(frames, clip, count=3, height=60)
    assert s.shape == (60, 3 * 90 + 2 * 4, 3)


def test_a_failed_write_leaves_nothing(tmp_path, clip):
    def frames():
        yield np.zeros((40, 60, 3), np.uint8)
        raise RuntimeError("the disk is gone")

    path = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError):
        preview.write_video(str(path), frames(), 12.0)
    assert list(tmp_path.iterdir()) == []


def test_the_forked_preview_draws_the_same_frames(clip, monkeypatch):
    import sys

    from dualpm_addon.video import forked

    if not sys.platform.startswith("linux"):
        pytest.skip("the preview forks only on Linux")
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (T, 120, 180, 3), dtype=np.uint8)
    got = {}

    def capture(key):
        def write_video(path, it, fps):
            got[key] = np.stack(list(it))
            return path
        return write_video

    monkeypatch.setattr(preview, "FORK_MIN_FRAMES", 2)
    for key, allowed in (("forked", True), ("here", False)):
        monkeypatch.setattr(forked, "allowed", lambda a=allowed: a)
        monkeypatch.setattr(preview, "write_video", capture(key))
        preview.write_preview("unused.mp4", frames, clip, 12.0)
    assert got["forked"].shape == (T, 120, 364, 3)
    np.testing.assert_array_equal(got["forked"], got["here"])
