"""A fresh reconstruction's motion (dualpm_addon.idle): the template's clip layered on the photo's
pose; in real Blender (bpy in process), frame 1 of the action is the photo's pose and the .glb
carries the action."""

import numpy as np
import pytest

from dualpm_addon import idle, template
from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_angle, quat_conj, quat_from_axis_angle, quat_mul, quat_normalize


@pytest.fixture(scope="module")
def tpl():
    return template.load_default()


def _photo_pose(sk, seed=0):
    rng = np.random.default_rng(seed)
    return quat_from_axis_angle(rng.normal(0, 0.4, (sk.num_joints, 3)))


@pytest.mark.parametrize("motion", sorted(idle.MOTIONS))
def test_frame_0_is_the_photos_pose_and_the_clip_moves_from_it(tpl, motion):
    sk = tpl.skeleton
    photo = _photo_pose(sk)
    m = idle.layered(tpl, motion, sk.joint_names, photo, scale=0.5)
    clip = tpl.clip(idle.MOTIONS[motion])
    assert m.clip == clip.name and m.fps == clip.fps and m.rotations.shape == (m.num_frames, sk.num_joints, 4)
    assert np.array_equal(m.rotations[0], quat_normalize(photo))  # the same operation, exactly
    assert np.array_equal(m.root_translation[0], np.zeros(3)) and not np.any(m.offsets[0])
    # frame t: the photo's pose times the clip's own motion since its first frame, bone by bone
    t = min(7, m.num_frames - 1)
    want = quat_mul(photo, quat_mul(quat_conj(clip.rotations[0]), clip.rotations[t]))
    assert np.max(quat_angle(m.rotations[t], want)) < 1e-6
    assert np.allclose(m.root_translation[t], 0.5 * (clip.root_translation[t] - clip.root_translation[0]))
    assert m.num_frames >= idle.MIN_SECONDS * clip.fps or m.num_frames == clip.num_frames


def test_a_looping_clip_repeats_without_its_closing_frame(tpl):
    walk = tpl.clip("Walk")  # 29 frames, the last one the first again
    m = idle.layered(tpl, "walk", tpl.skeleton.joint_names, _photo_pose(tpl.skeleton), 1.0)
    cycle = walk.num_frames - 1
    assert m.num_frames == cycle * int(np.ceil(idle.MIN_SECONDS * walk.fps / cycle))
    # the second cycle starts where the first did
    assert np.max(quat_angle(m.rotations[cycle], m.rotations[0])) < 1e-6


def test_a_cycle_without_a_closing_frame_repeats_whole_and_a_one_off_clip_plays_once(tpl):
    gallop, eating = tpl.clip("Gallop"), tpl.clip("Eating")  # 15 frames, the 16th would be the 1st; 145
    m = idle.layered(tpl, "gallop", tpl.skeleton.joint_names, _photo_pose(tpl.skeleton), 1.0)
    assert m.num_frames == gallop.num_frames * int(np.ceil(idle.MIN_SECONDS * gallop.fps / gallop.num_frames))
    assert np.max(quat_angle(m.rotations[gallop.num_frames], m.rotations[0])) < 1e-6
    once = idle.layered(tpl, "eating", tpl.skeleton.joint_names, _photo_pose(tpl.skeleton))
    assert once.num_frames == eating.num_frames


def test_bones_are_matched_by_name_and_root_motion_scales_with_the_hind_leg(tpl):
    sk = tpl.skeleton
    names = list(sk.joint_names)[::-1] + ["NotInTheTemplate"]
    photo = _photo_pose(sk, 1)
    photo = np.concatenate([photo[::-1], [[1.0, 0.0, 0.0, 0.0]]])
    m = idle.layered(tpl, "gallop", names, photo)
    plain = idle.layered(tpl, "gallop", sk.joint_names, photo[:-1][::-1])
    assert np.allclose(m.rotations[:, :-1][:, ::-1], plain.rotations)
    assert np.allclose(m.rotations[:, -1], [1.0, 0.0, 0.0, 0.0])  # a bone the clip lacks keeps its photo pose
    assert idle.root_scale(sk, sk) == pytest.approx(1.0)
    from dualpm_addon.fitting import scaled_rest_skeleton
    assert idle.root_scale(sk, scaled_rest_skeleton(sk, 0.5, np.ones(sk.num_joints))) == pytest.approx(0.5)


def test_bad_input_is_one_line(tpl):
    sk = tpl.skeleton
    with pytest.raises(DualPMError, match=r"^motion 'dance': expected one of idle, walk, gallop, eating, none$"):
        idle.layered(tpl, "dance", sk.joint_names, _photo_pose(sk))
    with pytest.raises(DualPMError, match=r"^motion: photo rotations have shape \(3, 4\), expected \(46, 4\)$"):
        idle.layered(tpl, "idle", sk.joint_names, np.ones((3, 4)))


def test_in_blender_frame_1_is_the_photos_pose_and_the_glb_has_the_action(templates_dir, tmp_path):
    bpy = pytest.importorskip("bpy")
    from dualpm_addon import gltf_write, pipeline
    from operators import animation, export, scene_build
    from training.evaluate import true_map

    from .fit_fixtures import horse_render

    s = horse_render(templates_dir, seed=3)
    pm = true_map(s)
    pm["photo_mask"] = np.asarray(s["mask"], bool)
    photo = pipeline.PhotoInput(np.asarray(s["rgb"]), np.asarray(s["mask"], bool), None, "render.png")
    rec = pipeline.from_pointmap(pm, photo, template=template.load_default(),
                                 settings=pipeline.Settings(confidence_threshold=-np.inf, character="template"))
    bpy.ops.wm.read_homefile(use_empty=True)
    objs = scene_build.build(bpy.context, rec)
    arm, surf = objs["armature"], objs["surface"]
    dg = bpy.context.evaluated_depsgraph_get()
    still = np.array([list(v.co) for v in surf.evaluated_get(dg).to_mesh().vertices])  # the fitted pose
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 5, 50
    scene.frame_set(7)
    info = animation.write_motion(bpy.context, arm, rec, "idle", set_scene_range=False)  # the panel's way
    assert info["frame_range"] == [7, 7 + info["frames"] - 1]  # from the frame the user is on...
    assert (scene.frame_start, scene.frame_end, scene.frame_current) == (5, 50, 7)  # ...the scene as it was
    info = animation.write_motion(bpy.context, arm, rec, "walk")  # the batch files' way
    assert info["clip"] == "Walk" and info["frame_range"] == [1, info["frames"]]
    assert (scene.frame_start, scene.frame_end, scene.frame_current) == (1, info["frames"], 1)
    assert animation.write_motion(bpy.context, arm, rec, "none") is None

    def surface_at(frame):
        bpy.context.scene.frame_set(frame)
        dg = bpy.context.evaluated_depsgraph_get()
        return np.array([list(v.co) for v in surf.evaluated_get(dg).to_mesh().vertices])

    assert np.abs(surface_at(1) - still).max() < 1e-4  # frame 1: the photo's pose, on the animal
    assert np.abs(surface_at(10) - still).max() > 0.02  # and then it walks
    glb = str(tmp_path / "walk.glb")
    export.export_collection(bpy.context, objs["collection"], glb)
    with open(glb, "rb") as f:
        js, _ = gltf_write.read_glb(f.read())
    assert info["action"] in [a["name"] for a in js["animations"]]  # (the idle one written first is there too)

    def heads(a, frame):
        bpy.context.scene.frame_set(frame)
        return np.array([list(a.matrix_world @ b.head) for b in a.pose.bones])

    want = {f: heads(arm, f) for f in (1, 10, 40)}
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    back = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    back.animation_data.action = next(a for a in bpy.data.actions if a.name == info["action"])
    for f, h in want.items():  # the walk as Blender's importer reads it back, frame by frame
        assert np.abs(heads(back, f) - h).max() < 1e-4, f
