"""The canonical space Q shared by every species.

Definition. Q is the rest-pose model space of the reference species (the horse baked in
`assets/template_horse.npz`): metres, Z up, the animal faces -Y, its left is +X, the ground at
Z = 0 under the hooves. A point of any other species is carried into Q through the shared
skeleton: bone j of species s is mapped onto bone j of the reference by

    A_j = B_j^ref  D_j  (B_j^s)^-1

where B are the rigid rest frames (Y along the bone) and D_j = diag(sx, sy, sz) scales the bone's
own axes: sy = reference bone length / species bone length, and sx, sz the ratio of the RMS
distances of the bone's skin (vertices it dominates) from the bone axis, so that a thick bull
and a thin deer both land on the horse's surface. A vertex goes through the skin-weighted blend
Q(v) = sum_j w_j A_j v (bones the reference lacks use their nearest shared ancestor's
map), so Q is continuous over the mesh, joint heads land exactly on the
reference joints, and anatomically matching points (nose tip, hooves, tail tip, withers) land
close to each other whatever the species (tests/test_canonical.py measures how close).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import DualPMError
from .skeleton import rigid_inverse

# Bones of the shared quadruped rig that anatomical landmarks hang off.
LANDMARK_BONES = {
    "nose_tip": "Head",
    "front_left_hoof": "FrontLowerLeg.L",
    "front_right_hoof": "FrontLowerLeg.R",
    "back_left_hoof": "BackLowerLeg.L",
    "back_right_hoof": "BackLowerLeg.R",
    "tail_tip": "Tail1",  # the skinned end of the chain that starts here
    "withers": "Torso2",
}

_MIN_SKIN = 12  # fewer dominant vertices than this and a bone's thickness is not measurable


def _skin_rms(template, j: int) -> np.ndarray | None:
    """RMS bone-local |x| and |z| of the vertices that bone j dominates."""
    dom = template.skin_joints[np.arange(len(template.vertices)), np.argmax(template.skin_weights, axis=1)]
    v = template.vertices[dom == j]
    if len(v) < _MIN_SKIN:
        return None
    b = template.skeleton.rest_matrices[j]
    local = (v - b[:3, 3]) @ b[:3, :3]
    return np.sqrt(np.mean(local[:, [0, 2]] ** 2, axis=0))


def bone_maps(species, reference) -> np.ndarray:
    """(J_species, 4, 4) affine maps A_j from the species' rest space into Q.

    One rig, several builds: a species may lack bones of the reference (the bull has no ear
    bones, the deer a short tail) or add bones at the end of a chain (the fox's Tail8). Extra
    bones follow the map of their nearest shared ancestor. Shared bones must have the same
    parents; anything else is a rig that does not match.
    """
    ss, sr = species.skeleton, reference.skeleton
    shared = [n for n in ss.joint_names if n in sr.joint_names]
    if ss.joint_names[0] not in sr.joint_names or len(shared) < max(3, sr.num_joints // 2):
        raise DualPMError(f"rig does not match the reference {reference.species!r}: it shares "
                          f"{len(shared)} of {sr.num_joints} bones")

    def shared_ancestor(j):
        p = int(ss.parents[j])
        while p >= 0 and ss.joint_names[p] not in sr.joint_names:
            p = int(ss.parents[p])
        return p

    global_ratio = reference.body_length / species.body_length
    maps = np.zeros((ss.num_joints, 4, 4))
    for j, name in enumerate(ss.joint_names):
        if name not in sr.joint_names:
            maps[j] = maps[shared_ancestor(j)]
            continue
        r = sr.index(name)
        rs, rr = _skin_rms(species, j), _skin_rms(reference, r)
        if rs is None or rr is None:
            perp = np.array([global_ratio, global_ratio])
        else:
            # Clamp: a bone whose skin is unusually shaped must not blow points away.
            perp = np.clip(rr / np.maximum(rs, 1e-9), 0.5 * global_ratio, 2.0 * global_ratio)
        axial = sr.bone_lengths[r] / max(ss.bone_lengths[j], 1e-9)
        d = np.diag([perp[0], axial, perp[1], 1.0])
        maps[j] = sr.rest_matrices[r] @ d @ rigid_inverse(ss.rest_matrices[j])
    return maps


def to_canonical(points: np.ndarray, skin_joints: np.ndarray, skin_weights: np.ndarray,
                 maps: np.ndarray) -> np.ndarray:
    """Carry rest-pose points (V, 3) of a species into Q with its bone maps."""
    blended = np.einsum("vk,vkij->vij", skin_weights, maps[skin_joints, :3, :])
    return np.einsum("vij,vj->vi", blended[..., :3], points) + blended[..., 3]


def carry_to_reference(species, reference, source: str | None = None):
    """A copy of `species` whose canonical_vertices lie in the reference's Q."""
    try:
        maps = bone_maps(species, reference)
    except DualPMError as e:
        raise DualPMError(f"{source or species.species}: {e}") from None
    q = to_canonical(species.vertices, species.skin_joints, species.skin_weights, maps)
    return dataclasses.replace(species, canonical_vertices=q)


def landmarks(template, points: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Anatomical landmarks found through the skeleton, as positions in `points` (default: rest mesh).

    Vertices are chosen on the rest mesh (so the choice does not depend on `points`): each
    landmark is the mean of the few extreme vertices of the skin its bone dominates, which keeps
    it stable where the extreme is a flat patch (a hoof sole).
    """
    points = template.vertices if points is None else points
    v = template.vertices
    sk = template.skeleton
    dom = template.skin_joints[np.arange(len(v)), np.argmax(template.skin_weights, axis=1)]
    band = 0.02 * template.body_length
    out = {}
    for name, bone in LANDMARK_BONES.items():
        j = sk.index(bone)
        if name == "tail_tip":
            # Tails differ in bone count between species (3 to 8): use the deepest skinned one.
            chain = [j] + sk.descendants(j)
            skinned = [c for c in chain if np.any(dom == c)]
            j = max(skinned, key=lambda c: len(sk.chain_to_root(c))) if skinned else j
        idx = np.nonzero(dom == j)[0]
        if len(idx) == 0:
            raise DualPMError(f"{template.species}: bone {bone} has no skin, cannot place {name}")
        if name == "nose_tip":
            score = -v[idx, 1]  # most forward (the animal faces -Y)
        elif name.endswith("hoof"):
            score = -v[idx, 2]  # lowest
        elif name == "tail_tip":
            score = np.linalg.norm(v[idx] - sk.rest_heads[sk.index("Tail1")], axis=1)
        else:  # withers: the top of the back above the front legs
            score = v[idx, 2]
        sel = idx[score >= score.max() - band]
        out[name] = points[sel].mean(axis=0)
    return out
