"""Starting points for the photo fit: facings and poses. The photo fit's cost has many local
minima (a head-to-tail flip reprojects the trunk almost as well), so it is started from each of
these and the lowest cost is kept.

Facings: upright, the body's forward axis (model -Y) turned to one of 8 directions in the
camera's horizontal plane (right, left, away, toward the camera and the diagonals); the camera's
own tilt is left to the solve.
Poses: frames of the reference template's clips (standing, walking, galloping, head down while
eating, lying on its side at the end of Death), and the poses photos show that no clip has,
authored in poses.py (lying on the belly with the head up, lying with the legs tucked, sitting).
"""

from __future__ import annotations

import numpy as np

from ..rotations import quat_to_matrix

FACINGS_DEG = (0, 45, 90, 135, 180, 225, 270, 315)  # 0: facing camera-right, 90: away, 270: toward
# (name, clip, where in the clip 0..1)
CLIP_POSES = (("standing", "Idle", 0.0), ("walking", "Walk", 0.5), ("galloping", "Gallop", 0.35),
              ("eating", "Eating", 0.5), ("lying_side", "Death", 1.0))


def facing_rotation(degrees: float) -> np.ndarray:
    """(3, 3) model -> camera rotation of an upright animal facing the camera-space direction
    (cos a, 0, sin a): model +Z goes to camera up (-y), model -Y to that direction."""
    a = np.radians(degrees)
    d = np.array([np.cos(a), 0.0, np.sin(a)])
    up = np.array([0.0, -1.0, 0.0])
    r = np.empty((3, 3))
    r[:, 1], r[:, 2] = -d, up
    r[:, 0] = np.cross(r[:, 1], r[:, 2])
    return r


def clip_poses(template) -> list[tuple[str, np.ndarray]]:
    """(name, local rotations (J, 3, 3)) of CLIP_POSES found in the template's clips."""
    out = []
    for name, clip, at in CLIP_POSES:
        if clip not in template.clip_names:
            continue
        c = template.clip(clip)
        frame = int(round(at * (c.num_frames - 1)))
        out.append((name, quat_to_matrix(np.asarray(c.rotations[frame], dtype=np.float64))))
    return out


def pose_hypotheses(template) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, local rotations (J, 3, 3), root tilt (3, 3) in model space) of every starting pose:
    the clip poses (no tilt) and the authored ones."""
    from .poses import authored_poses

    return [(n, r, np.eye(3)) for n, r in clip_poses(template)] + authored_poses(template.skeleton)


def prior_modes() -> set[str]:
    """The starting poses that are modes of their own in the pose prior (terms.PosePriorTerm.centred):
    the authored ones. The clips' Gaussian is centred near standing, so without its own mode a
    lying or sitting animal's fit would be pulled back up toward standing. Lying on the side is a
    clip pose, inside the Gaussian's data; as a mode of its own it won on upright blobs (the
    quokka: rig IoU 0.81 to 0.79) and did not help lying renders (docs/fitting.md)."""
    from .poses import AUTHORED

    return {p.name for p in AUTHORED}
