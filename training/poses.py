"""Pose sampling for synthesis: clip frames, blends between clips, perturbations, heading.

A pose is what `Template.pose_vertices` needs (local joint rotations, the root head's
translation, the local head offsets of baked IK bones) plus a heading: a rotation `yaw` about the
world's up axis (Z), the full circle. It comes from

* a frame of one clip of the species (every clip, every frame equally likely), optionally
* blended with a frame of another clip of the same species (slerp per joint, lerp of the root
  translation and offsets), optionally
* perturbed joint by joint within plausible limits (`PoseSpace`);

or, with `authored_probability`, one of the lying and sitting poses that photos show and no clip
has (dualpm_addon/fitting/poses.py), carried onto the species' bones.

Plausible limits come from the species' own clips: for every joint, the range of its local
rotation (as a rotation vector, the rest pose being zero) over all frames of all clips, widened by
a margin. A perturbation adds Gaussian noise scaled by the joint's spread over the clips and is
then clamped into that range, so a joint that never moves in any clip (a helper bone) barely
moves, and a neck that swings far may swing far.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_from_axis_angle, quat_slerp, quat_to_axis_angle

MARGIN_FRACTION = 0.1  # of a joint's range across clips, added on each side
MARGIN_MIN = np.radians(2.0)  # so that joints that never move can still move a little
SIGMA_FLOOR = np.radians(1.0)


@dataclass(frozen=True)
class Pose:
    rotations: np.ndarray  # (J, 4) local quaternions (w, x, y, z)
    root_translation: np.ndarray  # (3,) model space
    offsets: np.ndarray  # (J, 3) local head offsets (baked IK bones)
    clip: str = ""
    frame: int = -1
    clip_b: str = ""  # the second clip of a blend, "" when none
    frame_b: int = -1
    blend: float = 0.0  # weight of clip_b
    perturbation: float = 0.0  # noise scale relative to each joint's spread over the clips
    yaw: float = 0.0  # radians about world +Z

    def model_to_world(self) -> np.ndarray:
        """4x4: the model's heading in the world (Z up)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        m = np.eye(4)
        m[:2, :2] = [[c, -s], [s, c]]
        return m

    def description(self) -> str:
        out = f"{self.clip}[{self.frame}]"
        if self.clip_b:
            out += f" + {self.blend:.2f} x {self.clip_b}[{self.frame_b}]"
        if self.perturbation > 0:
            out += f", perturbed x{self.perturbation:.2f}"
        return out + f", yaw {np.degrees(self.yaw):.1f} deg"


@dataclass(frozen=True)
class PoseSpace:
    """Per-joint limits of local rotation vectors over a species' clips."""

    low: np.ndarray  # (J, 3) radians
    high: np.ndarray  # (J, 3)
    sigma: np.ndarray  # (J, 3) spread over the clips


def pose_space(template) -> PoseSpace:
    rv = quat_to_axis_angle(np.asarray(template.clip_rotations, dtype=np.float64))  # (N, J, 3)
    if rv.shape[0] == 0:
        j = template.skeleton.num_joints
        return PoseSpace(np.full((j, 3), -MARGIN_MIN), np.full((j, 3), MARGIN_MIN), np.full((j, 3), SIGMA_FLOOR))
    lo, hi = rv.min(axis=0), rv.max(axis=0)
    margin = np.maximum(MARGIN_FRACTION * (hi - lo), MARGIN_MIN)
    return PoseSpace(low=lo - margin, high=hi + margin, sigma=np.maximum(rv.std(axis=0), SIGMA_FLOOR))


def clip_names(template, exclude=()) -> list[str]:
    """Clips of the template not excluded. An exclusion is "Clip" (any species) or
    "species:Clip"; names compare case-insensitively."""
    ex = {e.lower() for e in exclude}
    return [c for c in template.clip_names
            if c.lower() not in ex and f"{template.species}:{c}".lower() not in ex]


def check_exclusions(templates, exclude) -> None:
    """Every exclusion must name a clip of some template: a typo would silently hold out nothing."""
    known = set()
    for t in templates:
        known |= {c.lower() for c in t.clip_names} | {f"{t.species}:{c}".lower() for c in t.clip_names}
    bad = [e for e in exclude if e.lower() not in known]
    if bad:
        raise DualPMError(f"unknown clip {bad[0]!r} in the exclusion list (use Clip or species:Clip)")


def clip_pose(template, clip: str, frame: int) -> Pose:
    c = template.clip(clip)
    if not 0 <= frame < c.num_frames:
        raise DualPMError(f"{template.species} clip {clip!r} has {c.num_frames} frames, not frame {frame}")
    return Pose(rotations=c.rotations[frame], root_translation=c.root_translation[frame],
                offsets=c.offsets[frame], clip=clip, frame=int(frame))


def rest_pose(template) -> Pose:
    j = template.skeleton.num_joints
    return Pose(rotations=template.skeleton.rest_pose(), root_translation=np.zeros(3), offsets=np.zeros((j, 3)),
                clip="rest", frame=0)


def blend(a: Pose, b: Pose, weight: float) -> Pose:
    """Slerp every joint from a to b by `weight`; translation and offsets lerp."""
    w = float(weight)
    return dataclasses.replace(
        a, rotations=quat_slerp(a.rotations, b.rotations, w),
        root_translation=(1 - w) * np.asarray(a.root_translation) + w * np.asarray(b.root_translation),
        offsets=(1 - w) * np.asarray(a.offsets) + w * np.asarray(b.offsets),
        clip_b=b.clip, frame_b=b.frame, blend=w)


def perturb(pose: Pose, space: PoseSpace, rng: np.random.Generator, scale: float) -> Pose:
    """Add N(0, (scale * sigma_j)^2) to each joint's rotation vector, clamped to the limits."""
    rv = quat_to_axis_angle(pose.rotations)
    noisy = rv + rng.standard_normal(rv.shape) * space.sigma * scale
    noisy = np.clip(noisy, np.minimum(space.low, rv), np.maximum(space.high, rv))
    return dataclasses.replace(pose, rotations=quat_from_axis_angle(noisy), perturbation=float(scale))


def authored_pose(template, name: str) -> Pose:
    """One of dualpm_addon.fitting.poses' authored poses (lying on the belly, sitting) on this
    species' own bones, the trunk's tilt in the root, standing on the ground (lowest vertex at z 0,
    as the clips' feet are)."""
    from dualpm_addon.fitting import poses as authored
    from dualpm_addon.rotations import matrix_to_quat

    by_name = {p.name: p for p in authored.AUTHORED}
    if name not in by_name:
        raise DualPMError(f"no authored pose {name!r}; there are {', '.join(by_name)}")
    sk = template.skeleton
    local = authored.local_rotations(sk, by_name[name])
    b0 = sk.rest_frames[0]
    local[0] = b0.T @ authored.root_tilt(by_name[name]) @ b0 @ local[0]
    rot = matrix_to_quat(local)
    j = sk.num_joints
    lowest = float(template.pose_vertices(rot)[:, 2].min())
    return Pose(rotations=rot, root_translation=np.array([0.0, 0.0, -lowest]), offsets=np.zeros((j, 3)),
                clip=f"authored:{name}", frame=0)


def sample(template, rng: np.random.Generator, space: PoseSpace | None = None, exclude=(),
           blend_probability: float = 0.3, perturb_probability: float = 0.8, max_scale: float = 1.0,
           authored_probability: float = 0.0, frame_range: tuple[float, float] = (0.0, 1.0)) -> Pose:
    """A random pose of `template`: clip frame, maybe a blend, maybe a perturbation, any heading.

    authored_probability: the share of poses taken from the authored lying and sitting poses
    instead of a clip (then only perturbed, never blended); frame_range: where in each clip frames
    are drawn from, as fractions of its length ((0.85, 1) with Death alone: lying on the side).
    Both draw numbers only when set, so the default stream is unchanged."""
    clips = clip_names(template, exclude)
    if not clips:
        raise DualPMError(f"{template.species}: every clip is excluded")
    space = pose_space(template) if space is None else space
    lo_f, hi_f = (float(v) for v in frame_range)

    def frame_of(name):
        n = template.clip(name).num_frames
        if (lo_f, hi_f) == (0.0, 1.0):
            return clip_pose(template, name, int(rng.integers(n)))
        lo = min(int(np.floor(lo_f * (n - 1))), n - 1)
        return clip_pose(template, name, int(rng.integers(lo, max(int(np.ceil(hi_f * (n - 1))), lo) + 1)))

    if authored_probability > 0 and rng.uniform() < authored_probability:
        from dualpm_addon.fitting.poses import AUTHORED

        pose = authored_pose(template, AUTHORED[int(rng.integers(len(AUTHORED)))].name)
        scale, do_perturb = rng.uniform(0.0, max_scale), rng.uniform() < perturb_probability
        yaw = rng.uniform(0.0, 2 * np.pi)
        if do_perturb:
            pose = perturb(pose, space, rng, 0.5 * scale)
        return dataclasses.replace(pose, yaw=float(yaw))
    pose = frame_of(clips[int(rng.integers(len(clips)))])
    # The choices and the heading are drawn first, so whether a blend or a perturbation happens
    # (they draw more numbers) does not change them.
    other = clips[int(rng.integers(len(clips)))]
    w, do_blend = rng.uniform(0.0, 1.0), rng.uniform() < blend_probability
    scale, do_perturb = rng.uniform(0.0, max_scale), rng.uniform() < perturb_probability
    yaw = rng.uniform(0.0, 2 * np.pi)
    if do_blend:
        pose = blend(pose, frame_of(other), w)
    if do_perturb:
        pose = perturb(pose, space, rng, scale)
    return dataclasses.replace(pose, yaw=float(yaw))
