"""Synthetic video clips with ground truth: consecutive frames of one animation of one species,
rendered by the synthesizer (exact amodal dual point maps, photo-like images, true joints).

    frames = render_clip(".cache/templates", "horse", "Walk", seed=0)
    frames[t]            # a synthesizer sample dict (P, Q, occupancy, confidence, intrinsics, rgb,
                         # mask, joints, joint_names, ...), plus `time_index` and `clip_fps`

One clip has one look, light, background and camera path (the same random streams every frame),
so only the animal and the camera move. The game clips walk on the spot (their feet slide back
under the body); with `travel` the animal is moved over the ground at the speed of its feet in
contact (retarget.ground_velocity), so a foot on the ground stays put in the world, as a filmed
animal's does. Cameras: "fixed"; "orbit" (slowly moving: `orbit_deg` of azimuth over the clip);
"pan_zoom" (a still animal filmed by a camera that turns and zooms).

`still_photo_clip` makes the other kind of clip from a real photo: pan and zoom crops of one
still picture (the animal does not move, the camera does).
"""

from __future__ import annotations

import numpy as np

from dualpm_addon import camera as cam
from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import matrix_from_axis_angle
from dualpm_addon.skinning import linear_blend_skinning

from . import poses, raycast
from .synthesize import SynthConfig, Synthesizer, sample_camera

# Feet of the shared 50-bone rig: the hoof heads (the lowest joints of each leg).
FEET = ("FF.L", "FF.R", "FFB.L", "FFB.R")
CAMERAS = ("fixed", "orbit", "pan_zoom")


def clip_config() -> SynthConfig:
    """Whole animals, no occluders (a clip's occluder would sit still while the animal moves),
    the camera no farther off centre than half the frame's margin."""
    return SynthConfig(closeup_probability=0.0, occluder_probability=0.0, cut_probability=0.0,
                       fill=(0.45, 0.65), elevation_deg=(0.0, 35.0))


def _pose_frames(template, clip: str, start: int, count: int, stride: int):
    c = template.clip(clip)
    idx = start + stride * np.arange(count)
    if count < 1 or idx[-1] >= c.num_frames or start < 0:
        raise DualPMError(f"{template.species} clip {clip!r} has {c.num_frames} frames; frames "
                          f"{start}..{int(idx[-1]) if count else start} (stride {stride}) do not fit")
    # stride 0: one pose held (a still animal), at the clip's rate
    return [poses.clip_pose(template, clip, int(i)) for i in idx], c.fps / max(stride, 1)


def travel_offsets(template, pose_list, fps: float) -> np.ndarray:
    """(T, 3) model-space offsets that move an on-the-spot clip over the ground so that feet in
    contact stay put (zero for a clip that already travels)."""
    from dualpm_addon.retarget import ground_velocity

    sk = template.skeleton
    feet = [sk.index(n) for n in FEET if n in sk.joint_names]
    pos = np.stack([sk.forward_kinematics(p.rotations, p.root_translation, offsets=p.offsets)[feet, :3, 3]
                    for p in pose_list])
    leg = float(np.ptp(template.vertices[:, 2]))  # standing height: a leg length within a factor of 2
    v = ground_velocity(pos, np.array([0.0, 0.0, 1.0]), leg, fps)
    return -np.arange(len(pose_list))[:, None] / fps * v[None, :]


def render_clip(templates_dir: str | None, species: str, clip: str, seed: int = 0, start: int = 0,
                count: int | None = None, stride: int = 1, size: int = 160, camera: str = "fixed",
                orbit_deg: float = 10.0, pan_deg: float = 6.0, zoom: float = 1.25, travel: bool = True,
                layers: int = 4, backgrounds_dir: str | None = "auto") -> list[dict]:
    """`count` frames (default: the whole clip from `start`) of `clip`, every `stride`-th one
    (stride 0: frame `start` held, a still animal)."""
    if camera not in CAMERAS:
        raise DualPMError(f"camera {camera!r}: one of {', '.join(CAMERAS)}")
    synth = Synthesizer(templates_dir, size=size, layers=layers, species=[species], config=clip_config(),
                        backgrounds_dir=backgrounds_dir)
    sd = synth._species(species)
    t, topo = sd.template, sd.topo
    n_all = t.clip(clip).num_frames
    if count is None:
        count = (n_all - start + stride - 1) // stride if stride > 0 else 12
    count = int(count)
    pose_list, fps = _pose_frames(t, clip, start, count, stride)
    g_pose, g_cam, g_look, g_light, g_bg, g_fx = (np.random.SeedSequence(int(seed)).spawn(6))
    yaw = float(np.random.default_rng(g_pose).uniform(0, 2 * np.pi))
    offsets = travel_offsets(t, pose_list, fps) if travel else np.zeros((count, 3))

    worlds, joints_world = [], []
    for pose, off in zip(pose_list, offsets):
        frames = t.skeleton.forward_kinematics(pose.rotations, pose.root_translation + off, offsets=pose.offsets)
        model = linear_blend_skinning(sd.rest, sd.skin_joints, sd.skin_weights, t.skeleton.skinning_matrices(frames))
        m2w = poses.Pose(pose.rotations, pose.root_translation, pose.offsets, yaw=yaw).model_to_world()
        worlds.append(topo.add_caps(model @ m2w[:3, :3].T + m2w[:3, 3]))
        joints_world.append(t.skeleton.joint_positions(frames) @ m2w[:3, :3].T + m2w[:3, 3])
    # One camera framing the whole clip's path (every frame's rest-mesh vertices), moved per frame.
    path = np.concatenate([w[: len(sd.rest)][::7] for w in worlds])
    w2c0, k0, info = sample_camera(np.random.default_rng(g_cam), path, size, synth.config)
    out = []
    for i, (world, jw, pose) in enumerate(zip(worlds, joints_world, pose_list)):
        s = i / max(count - 1, 1)
        w2c, k = _moved_camera(w2c0, k0, path, camera, s, orbit_deg, pan_deg, zoom)
        welded = world @ w2c[:3, :3].T + w2c[:3, 3]
        scene = raycast.make_scene(welded, topo.faces)
        pm = raycast.point_maps(None, sd.q_ext, topo, k, size, size, layers, welded=welded, scene=scene, compact=True)
        hits, pixels = pm.pop("hits"), pm.pop("pixels")
        mask = pm["occupancy"][0] > 0
        rngs = [np.random.default_rng(g) for g in (g_look, g_light, g_bg, g_fx)]  # the same look every frame
        img, _, bg_name = synth._image(sd, welded, world, w2c, k, scene, hits, pixels, *rngs, mask)
        sample = dict(pm)
        sample.update({
            "rgb": img, "mask": mask, "joints": (jw @ w2c[:3, :3].T + w2c[:3, 3]).astype(np.float32),
            "joint_names": np.array(t.skeleton.joint_names, dtype=np.str_), "species": np.array(species),
            "clip": np.array(clip), "frame": np.array(pose.frame, dtype=np.int32), "time_index": np.array(i),
            "clip_fps": np.array(fps, dtype=np.float32), "extrinsics": w2c.astype(np.float32),
            "joints_world": jw.astype(np.float32), "focal_mm": np.array(_focal_mm(k, size), dtype=np.float32),
            "camera": np.array(camera), "background": np.array(bg_name), "seed": np.array(int(seed)),
        })
        out.append(sample)
    return out


def _focal_mm(k: np.ndarray, size: int) -> float:
    return float(cam.focal_mm_from_intrinsics(k, size, size))


def _moved_camera(w2c0, k0, path, kind: str, s: float, orbit_deg: float, pan_deg: float, zoom: float):
    """The camera at clip time s in [0, 1]: fixed; orbiting the path's centre about the world up
    axis; or turned about its own vertical axis (pan) and zoomed (focal times 1..zoom)."""
    if kind == "fixed":
        return w2c0, k0
    if kind == "orbit":
        centre = 0.5 * (path.min(axis=0) + path.max(axis=0))
        turn = np.eye(4)
        turn[:3, :3] = matrix_from_axis_angle(np.array([0.0, 0.0, np.radians(orbit_deg) * s]))
        shift, back = np.eye(4), np.eye(4)
        shift[:3, 3], back[:3, 3] = -centre, centre
        return w2c0 @ back @ turn @ shift, k0
    # pan and zoom: a smooth swing out and back (sin), the zoom rising through the clip
    a = np.radians(pan_deg) * np.sin(np.pi * s)
    r = np.eye(4)
    r[:3, :3] = matrix_from_axis_angle(np.array([0.0, a, 0.0]))  # about the camera's own y (image vertical)
    k = k0.copy()
    k[0, 0] *= 1 + (zoom - 1) * s
    k[1, 1] *= 1 + (zoom - 1) * s
    return r @ w2c0, k


def still_photo_clip(rgb: np.ndarray, count: int = 12, pan: float = 0.08, zoom: float = 1.2,
                     out_size: tuple[int, int] | None = None, mask: np.ndarray | None = None):
    """Frames (list of (S, S, 3) uint8, and masks when `mask` is given) of a camera panning and
    zooming over one still photo: square crops that start at 95 % of the photo's shorter side,
    shrink to 1/zoom of it and swing sideways by up to `pan` of its width and back (kept inside
    the photo where it has room), resampled to out_size[0] pixels (default: the first crop's
    side). A crop of a photo is what a turning, zooming camera sees (the same centre of
    projection)."""
    from dualpm_addon.preprocess import crop_resize, crop_resize_mask

    h, w = rgb.shape[:2]
    side0 = 0.95 * min(h, w)
    frames, masks = [], []
    for i in range(count):
        s = i / max(count - 1, 1)
        side = side0 / (1 + (zoom - 1) * s)
        cx = w / 2 + pan * w * np.sin(np.pi * s)
        cx = float(np.clip(cx, side / 2, w - side / 2)) if w >= side else w / 2
        cy = h / 2
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        n = int(out_size[0]) if out_size else int(round(side0))
        frames.append(crop_resize(rgb, box, n))
        if mask is not None:
            masks.append(crop_resize_mask(mask, box, n) > 127)
    return (frames, masks) if mask is not None else frames


# ------------------------------------------------------------------------------------------------
# Figures of a fitted clip against its ground truth

def exact_frame(sample: dict) -> dict:
    """A clip frame's exact dual point map as predict_photo's dict: the whole render is the
    crop, the true mask is the outline, the render's focal length is known (as EXIF gives it)."""
    from .evaluate import true_map

    m = true_map(sample)
    size = int(m["P"].shape[1])
    m.update(crop_box=np.array([0.0, 0.0, size, size], np.float32), photo_size=np.array([size, size], np.int32),
             photo_mask=np.asarray(sample["mask"], bool), focal_from_exif=np.bool_(True), rgb=sample["rgb"],
             focal_mm=np.float32(sample["focal_mm"]), mask_source=np.str_("user"), animals_found=np.int32(1))
    return m


def joint_errors(joints: np.ndarray, names, frames: list[dict], body_length: float) -> np.ndarray:
    """(T,) joint error per frame in % of body length (metrics.joint_error_pct: translation and
    scale aligned, as for a photo); NaN where `joints[t]` is NaN."""
    from dualpm_addon import metrics

    out = np.full(len(frames), np.nan)
    for t, s in enumerate(frames):
        if np.all(np.isfinite(joints[t])):
            out[t] = metrics.joint_error_pct(joints[t], names, s["joints"], [str(n) for n in s["joint_names"]],
                                             body_length)
    return out


def acceleration(points: np.ndarray) -> np.ndarray:
    """(T-2, J) norm of the second difference over time of (T, J, 3) points."""
    return np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1)


def jitter_pct(joints: np.ndarray, body_length: float) -> float:
    """Mean joint acceleration (camera space) in % of body length per frame^2."""
    return float(100.0 * np.nanmean(acceleration(joints)) / body_length)


def pose_jitter_pct(joints: np.ndarray, model_to_camera: np.ndarray, body_length: float) -> float:
    """Mean joint acceleration relative to the root (the joints in the root's frame): what the
    pose does, apart from where the animal or the camera goes."""
    inv = np.linalg.inv(model_to_camera)
    local = np.einsum("tab,tjb->tja", inv[:, :3, :3], joints) + inv[:, None, :3, 3]
    return jitter_pct(local, body_length)


def bone_length_variation(joints: np.ndarray, parents) -> float:
    """Largest relative range over the clip of any bone's head-to-head length."""
    parents = np.asarray(parents)
    child = np.nonzero(parents >= 0)[0]
    lengths = np.linalg.norm(joints[:, child] - joints[:, parents[child]], axis=-1)  # (T, B)
    mean = lengths.mean(axis=0)
    ok = mean > 1e-6
    return float(np.max(np.ptp(lengths[:, ok], axis=0) / mean[ok])) if ok.any() else 0.0


def true_contacts(frames: list[dict], fps: float) -> tuple[np.ndarray, float]:
    """((T, 4) the true feet in contact, the true leg length): retarget.detect_contacts on the
    true world joints (Z up)."""
    from dualpm_addon.retarget import detect_contacts

    names = [str(n) for n in frames[0]["joint_names"]]
    feet = [names.index(f) for f in FEET]
    tops = [names.index(n) for n in ("FrontUpperLeg.L", "FrontUpperLeg.R", "BackUpperLeg.L", "BackUpperLeg.R")]
    jw = np.stack([np.asarray(f["joints_world"], np.float64) for f in frames])
    leg = float(np.mean(np.linalg.norm(jw[:, feet] - jw[:, tops], axis=-1)))
    return detect_contacts(jw[:, feet], np.array([0.0, 0.0, 1.0]), leg, fps), leg


def foot_slide_pct(joints: np.ndarray, names, contacts: np.ndarray, leg_length: float) -> float:
    """Mean displacement per frame of the feet in contact (both frames), % of leg length; NaN
    when no foot is in contact for two frames."""
    feet = [list(names).index(f) for f in FEET]
    pos = joints[:, feet]
    both = contacts[1:] & contacts[:-1]
    if not both.any():
        return float("nan")
    step = np.linalg.norm(pos[1:] - pos[:-1], axis=-1)
    return float(100.0 * step[both].mean() / leg_length)


def fitted_leg_length(joints: np.ndarray, names) -> float:
    names = list(names)
    feet = [names.index(f) for f in FEET]
    tops = [names.index(n) for n in ("FrontUpperLeg.L", "FrontUpperLeg.R", "BackUpperLeg.L", "BackUpperLeg.R")]
    return float(np.nanmean(np.linalg.norm(joints[:, feet] - joints[:, tops], axis=-1)))
