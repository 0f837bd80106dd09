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

from . import tails
from .errors import DualPMError
from .skeleton import rigid_inverse
from .skinning import dominant_joints

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

_MIN_SKIN = 12  # fewer dominant vertices than this and a bone's extent is not measurable
TAIL_ROOT = "Tail1"


def _dominant(template) -> np.ndarray:
    return dominant_joints(template.skin_joints, template.skin_weights)


def _skin_box(template, j: int, dom: np.ndarray) -> np.ndarray | None:
    """(2, 3) min and max, in bone j's local axes, of the vertices bone j dominates."""
    v = template.vertices[dom == j]
    if len(v) < _MIN_SKIN:
        return None
    b = template.skeleton.rest_matrices[j]
    local = (v - b[:3, 3]) @ b[:3, :3]
    return np.stack([local.min(axis=0), local.max(axis=0)])


def _chain(skeleton, name: str) -> list[int]:
    """The single-child chain that starts at `name` (a tail), empty if the bone is absent."""
    if name not in skeleton.joint_names:
        return []
    out = [skeleton.index(name)]
    while True:
        kids = skeleton.children(out[-1])
        if len(kids) != 1:
            return out
        out.append(kids[0])


def _box_map(box_s: np.ndarray, box_r: np.ndarray, ratio: float) -> np.ndarray:
    """4x4 local affine taking the species' skin box onto the reference's, axis by axis."""
    ext_s = box_s[1] - box_s[0]
    ext_r = box_r[1] - box_r[0]
    k = ext_r / np.maximum(ext_s, 1e-9)
    # A box far out of proportion (a bone skinning a different body part) falls back to the
    # global size ratio about the box centres, so it cannot blow points away.
    bad = (k < 0.4 * ratio) | (k > 2.5 * ratio)
    k = np.where(bad, ratio, k)
    centre_s, centre_r = box_s.mean(axis=0), box_r.mean(axis=0)
    m = np.eye(4)
    m[:3, :3] = np.diag(k)
    m[:3, 3] = centre_r - k * centre_s
    return m


def _tail_maps(species, reference, maps: np.ndarray, ratio: float) -> None:
    """Tails with other bone counts map by arc length: a species' tail bone covering fraction
    [s0, s1] of its tail goes onto the reference tail's [s0, s1], so tail tips meet."""
    ss, sr = species.skeleton, reference.skeleton
    cs, cr = _chain(ss, TAIL_ROOT), _chain(sr, TAIL_ROOT)
    if not cs or not cr or [ss.joint_names[j] for j in cs] == [sr.joint_names[j] for j in cr]:
        return
    def polyline(sk, chain):
        pts = np.concatenate([sk.rest_heads[chain], sk.rest_tails[chain[-1:]]])
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        return pts, cum / cum[-1]
    pr, fr = polyline(sr, cr)
    _, fs = polyline(ss, cs)
    at = lambda f: np.array([np.interp(f, fr, pr[:, i]) for i in range(3)])  # noqa: E731
    thick_s = np.sqrt(np.mean([_rms_radius(species, j) for j in cs]))
    thick_r = np.sqrt(np.mean([_rms_radius(reference, j) for j in cr]))
    perp = np.clip(thick_r / max(thick_s, 1e-9), 0.4 * ratio, 2.5 * ratio) if thick_s > 0 and thick_r > 0 else ratio
    for i, j in enumerate(cs):
        h, t = at(fs[i]), at(fs[i + 1])
        axis = t - h
        length = np.linalg.norm(axis)
        # Target frame: the reference bone at the segment's middle, turned so Y follows the segment.
        mid = cr[min(int(np.searchsorted(fr, 0.5 * (fs[i] + fs[i + 1]), side="right")) - 1, len(cr) - 1)]
        y = axis / max(length, 1e-9)
        x = sr.rest_frames[mid][:, 0] - y * (sr.rest_frames[mid][:, 0] @ y)
        x /= max(np.linalg.norm(x), 1e-9)
        frame = np.eye(4)
        frame[:3, :3] = np.stack([x, y, np.cross(x, y)], axis=1)
        frame[:3, 3] = h
        d = np.diag([perp, length / max(ss.bone_lengths[j], 1e-9), perp, 1.0])
        maps[j] = frame @ d @ rigid_inverse(ss.rest_matrices[j])


def _rms_radius(template, j: int) -> float:
    """Mean squared distance of bone j's skin from its axis (0 when it has too little skin)."""
    dom = _dominant(template)
    v = template.vertices[dom == j]
    if len(v) < _MIN_SKIN:
        return 0.0
    b = template.skeleton.rest_matrices[j]
    local = (v - b[:3, 3]) @ b[:3, :3]
    return float(np.mean(local[:, 0] ** 2 + local[:, 2] ** 2))


def bone_maps(species, reference) -> np.ndarray:
    """(J_species, 4, 4) affine maps A_j from the species' rest space into Q.

    One rig, several builds: a species may lack bones of the reference (the bull has no ear
    bones, the deer a short tail), add bones at the end of a chain (the fox's Tail8), or hang a
    bone off a neighbour (the fox's ears hang off the neck). Maps depend only on rest frames and
    skin, so parents may differ; extra bones follow the map of their nearest shared ancestor.
    A rig with another root, or sharing fewer than half the reference's bones, does not match.
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

    ratio = reference.body_length / species.body_length
    dom_s, dom_r = _dominant(species), _dominant(reference)
    maps = np.zeros((ss.num_joints, 4, 4))
    for j, name in enumerate(ss.joint_names):
        if name not in sr.joint_names:
            maps[j] = maps[shared_ancestor(j)]
            continue
        r = sr.index(name)
        box_s, box_r = _skin_box(species, j, dom_s), _skin_box(reference, r, dom_r)
        if box_s is None or box_r is None:
            axial = sr.bone_lengths[r] / max(ss.bone_lengths[j], 1e-9)
            local = np.diag([ratio, axial, ratio, 1.0])
        else:
            local = _box_map(box_s, box_r, ratio)
        maps[j] = sr.rest_matrices[r] @ local @ rigid_inverse(ss.rest_matrices[j])
    _tail_maps(species, reference, maps, ratio)
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
    q = _carry_tail(species, reference, maps, q)
    return dataclasses.replace(species, canonical_vertices=q)


def _carry_tail(species, reference, maps: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Replace the tail bones' share of each vertex's blend by the mesh-driven tail map
    (tails.py): Q = sum over body bones of w_j A_j v + w_tail T(v). Where the tail meets the
    body w_tail falls to 0, so the seam stays continuous."""
    w_tail = tails.tail_weight(species)
    on = w_tail > 0
    ts = tails.tail_coordinate(species)
    curve_s, curve_r = tails.tail_curve(species, ts), tails.tail_curve(reference)
    if not np.any(on) or curve_s is None or curve_r is None:
        return q
    bones = tails.tail_bones(species.skeleton)
    root = bones[0]
    wt = np.where(np.isin(species.skin_joints[on], bones), species.skin_weights[on], 0.0)
    bone_share = to_canonical(species.vertices[on], species.skin_joints[on], wt, maps)
    ratio = reference.body_length / species.body_length
    mesh_map = tails.carry_tail(species.vertices[on], ts[on], curve_s, curve_r, ratio)
    # Where the tail leaves the body, land where the root bone's map puts the root, fading out
    # along the first half of the tail, so the seam is not stretched.
    root_q = maps[root, :3, :3] @ curve_s.centre[0] + maps[root, :3, 3]
    fade = np.clip(1.0 - ts[on] / 0.5, 0.0, 1.0)[:, None]
    mesh_map = mesh_map + fade * (root_q - curve_r.centre[0])
    q = q.copy()
    q[on] += w_tail[on, None] * mesh_map - bone_share
    return q


def landmarks(template, points: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Anatomical landmarks found through the skeleton, as positions in `points` (default: rest mesh).

    Vertices are chosen on the rest mesh (so the choice does not depend on `points`): each
    landmark is the mean of the few extreme vertices of the skin its bone dominates, which keeps
    it stable where the extreme is a flat patch (a hoof sole).
    """
    points = template.vertices if points is None else points
    v = template.vertices
    sk = template.skeleton
    dom = _dominant(template)
    band = 0.02 * template.body_length
    out = {}
    for name, bone in LANDMARK_BONES.items():
        j = sk.index(bone)
        if name == "tail_tip":
            # The end of the tail by geodesic distance over the tail's own skin from where it
            # leaves the body (tails.py): bones do not follow every tail (the shiba's curls).
            dist = tails.tail_distance(template)
            if not np.any(np.isfinite(dist)):
                raise DualPMError(f"{template.species}: no tail skin, cannot place {name}")
            sel = np.nonzero(dist >= np.nanmax(dist) - band)[0]
            out[name] = points[sel].mean(axis=0)
            continue
        # Hooves and paws are skinned to the foot bones below the lower leg in some rigs.
        bones = [j] + (sk.descendants(j) if name.endswith("hoof") else [])
        idx = np.nonzero(np.isin(dom, bones))[0]
        if len(idx) == 0:
            raise DualPMError(f"{template.species}: bone {bone} has no skin, cannot place {name}")
        if name == "nose_tip":
            score = -v[idx, 1]  # most forward (the animal faces -Y)
        elif name.endswith("hoof"):
            score = -v[idx, 2]  # lowest
        else:
            # Withers: the top of the back right above the front shoulders.
            shoulders = [sk.index(n) for n in ("FrontShoulder.L", "FrontShoulder.R") if n in sk.joint_names]
            y = sk.rest_heads[shoulders, 1].mean() if shoulders else sk.rest_heads[j, 1]
            body = [k for k, n in enumerate(sk.joint_names) if n.startswith("Torso")] or [j]
            idx = np.nonzero(np.isin(dom, body) & (np.abs(v[:, 1] - y) < 0.05 * template.body_length))[0]
            score = v[idx, 2]
        sel = idx[score >= score.max() - band]
        out[name] = points[sel].mean(axis=0)
    return out
