"""The rig's structure, and what a fit needs from the template, computed once.

Left/right pairing (mirror names, shared scale groups, mirrored rotations), body parts (the
thickness scales), the instance's rest skeleton and rest surface under per-bone length scales and
per-part thickness, and FitContext (ancestor tables, chain levels, the correspondence index, the
pose prior), made by `prepare()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import correspondence as corr
from ..errors import DualPMError
from ..skeleton import Skeleton, rigid_inverse
from ..skinning import dominant_joints
from .prior import PosePrior, load_pose_prior

CORE_BONES = ("Back", "Torso", "Torso2", "Torso3")  # the rigid-ish trunk that places the animal
FIXED_BONES = ("Body", "Back")  # root and its only child: their rotation is the model->camera map
RIGID_STD = 0.02  # radians: joints no clip moves more than this are held at their prior mean
# Body parts with one thickness scale each (the silhouette sets them: a pig is fat, a greyhound
# thin). A bone belongs to the first part whose prefix its name starts with.
PARTS = (("back_legs", ("BackShoulder", "BackLeg", "BackUpperLeg", "BackLowerLeg", "IKBackLeg", "FFB")),
         ("front_legs", ("FrontShoulder", "FrontUpperLeg", "FrontLowerLeg", "IKFrontLeg", "FF.")),
         ("trunk", ("Body", "Back", "Torso")), ("neck", ("Neck",)), ("head", ("Head", "Ear")),
         ("tail", ("Tail",)))


def body_parts(skeleton: Skeleton) -> np.ndarray:
    """(J,) index into PARTS of each bone's part (-1: none)."""
    out = np.full(skeleton.num_joints, -1)
    for j, name in enumerate(skeleton.joint_names):
        for p, (_, prefixes) in enumerate(PARTS):
            if name.startswith(prefixes):
                out[j] = p
                break
    return out


def mirror_name(name: str) -> str | None:
    if name.endswith(".L"):
        return name[:-2] + ".R"
    if name.endswith(".R"):
        return name[:-2] + ".L"
    return None


def scale_groups(skeleton: Skeleton) -> np.ndarray:
    """(J,) scale parameter per bone: left and right bones share one; the root has -1."""
    g = np.full(skeleton.num_joints, -1)
    nxt = 0
    for j, name in enumerate(skeleton.joint_names):
        if j == 0 or g[j] >= 0:
            continue
        g[j] = nxt
        m = mirror_name(name)
        if m is not None and m in skeleton.joint_names:
            g[skeleton.index(m)] = nxt
        nxt += 1
    return g


def right_jacobian(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) right Jacobian of SO(3): exp(r + dr) ~ exp(r) exp(Jr(r) dr)."""
    theta = np.linalg.norm(r, axis=-1)[..., None, None]
    k = np.zeros(r.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -r[..., 2], r[..., 1], -r[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = r[..., 2], -r[..., 1], r[..., 0]
    small = theta < 1e-6
    t = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1 - np.cos(t)) / t**2)
    b = np.where(small, 1.0 / 6.0, (t - np.sin(t)) / t**3)
    return np.eye(3) - a * k + b * (k @ k)


def scaled_rest_skeleton(skeleton: Skeleton, global_scale: float, bone_scales: np.ndarray) -> Skeleton:
    """The instance's rest skeleton: heads through the scaled chain, tails stretched per bone,
    bone axes unchanged."""
    lr = skeleton.local_rest_matrices
    parents = np.asarray(skeleton.parents)
    off = global_scale * lr[:, :3, 3]
    off[1:, 1] *= np.asarray(bone_scales)[parents[1:]]
    off[1:] = np.einsum("jab,jb->ja", skeleton.rest_frames[parents[1:]], off[1:])
    heads = np.zeros((skeleton.num_joints, 3))
    heads[0] = off[0]
    depth = np.zeros(skeleton.num_joints, dtype=np.int64)
    for j in range(1, skeleton.num_joints):  # parents come first
        depth[j] = depth[parents[j]] + 1
    for d in range(1, depth.max() + 1):
        lev = np.nonzero(depth == d)[0]
        heads[lev] = heads[parents[lev]] + off[lev]
    tails = heads + global_scale * bone_scales[:, None] * (skeleton.rest_tails - skeleton.rest_heads)
    return Skeleton(tuple(skeleton.joint_names), np.asarray(skeleton.parents).copy(), heads, tails,
                    np.asarray(skeleton.rest_frames).copy())


def instance_rest_points(skeleton: Skeleton, points: np.ndarray, skin_joints: np.ndarray,
                         skin_weights: np.ndarray, global_scale: float, bone_scales: np.ndarray,
                         instance: Skeleton | None = None, thickness: np.ndarray | None = None) -> np.ndarray:
    """Template rest points (V, 3) carried onto the instance's rest skeleton: bone k maps its
    points by B'_k diag(s t_k, s s_k, s t_k) B_k^-1 (B, B' template and instance rest frames; t_k
    the thickness of k's body part, 1 when not given) and the skin weights blend the maps, as
    canonical.py blends its bone maps. `instance` is scaled_rest_skeleton(skeleton, global_scale,
    bone_scales), passed in when at hand."""
    inst = instance if instance is not None else scaled_rest_skeleton(skeleton, global_scale, bone_scales)
    thick = np.ones(skeleton.num_joints) if thickness is None else np.asarray(thickness, dtype=np.float64)
    d = np.zeros((skeleton.num_joints, 4, 4))
    d[:, 0, 0] = d[:, 2, 2] = global_scale * thick
    d[:, 1, 1] = global_scale * np.asarray(bone_scales)
    d[:, 3, 3] = 1
    maps = inst.rest_matrices @ d @ rigid_inverse(skeleton.rest_matrices)
    blended = np.einsum("vk,vkij->vij", skin_weights, maps[skin_joints, :3, :])
    return np.einsum("vij,vj->vi", blended[..., :3], points) + blended[..., 3]


def mirror_rotation(skeleton: Skeleton, src: int, dst: int, rotation: np.ndarray) -> np.ndarray:
    """The local rotation of bone `dst` that mirrors `rotation` of bone `src` across the
    sagittal plane (x -> -x in model space): B_dst^T S B_src R B_src^T S B_dst, S = diag(-1, 1, 1),
    with B the rest bone axes (model space)."""
    s = np.diag([-1.0, 1.0, 1.0])
    a = skeleton.rest_frames[dst].T @ s @ skeleton.rest_frames[src]
    return a @ rotation @ a.T


def mirror_unsupported(sk: Skeleton, local: np.ndarray, no_support: np.ndarray) -> np.ndarray:
    """Unsupported bones whose mirror partner is supported copy its mirrored local rotation:
    a hidden leg of a standing, jumping or lying animal is closer to its partner's pose than to
    the mean pose (docs/fitting.md measures it)."""
    out = local.copy()
    for j in np.nonzero(no_support)[0]:
        m = mirror_name(sk.joint_names[j])
        if m is not None and m in sk.joint_names and not no_support[sk.index(m)]:
            out[j] = mirror_rotation(sk, sk.index(m), j, local[sk.index(m)])
    return out


@dataclass(frozen=True)
class FitContext:
    """What a fit needs from the template, computed once and reused across fits.

    template; index (correspondence.TemplateIndex); prior (PosePrior in the skeleton's order);
    anc (J, J) bool, anc[k, j]: j is k or an ancestor of k; child (J, J) int, child[k, m]: the
    child of k on the way down to m (-1 if m is not strictly below k); levels: joint ids per
    depth below the root; groups (J,) scale parameter per bone; binv (J, 4, 4) inverse rest
    frames; lr_rot (J, 3, 3), lr_t (J, 3) local rest rotations and offsets; fixed (J,) bool
    joints without rotation parameters (root, Back, joints the clips never move); has_skin (J,);
    core: the trunk bones' ids; parts (J,) thickness part per bone (-1: none; PARTS names them).
    """

    template: object
    index: corr.TemplateIndex
    prior: PosePrior
    anc: np.ndarray
    child: np.ndarray
    levels: list
    groups: np.ndarray
    binv: np.ndarray
    lr_rot: np.ndarray
    lr_t: np.ndarray
    fixed: np.ndarray
    has_skin: np.ndarray
    core: np.ndarray
    parts: np.ndarray

    @property
    def skeleton(self) -> Skeleton:
        return self.template.skeleton


def prepare(template=None, prior: PosePrior | None = None, index: corr.TemplateIndex | None = None) -> FitContext:
    """A FitContext for `template` (default: the shipped horse, Q's reference) and `prior`
    (default: assets/pose_prior.npz). Building the correspondence index dominates (~0.2 s)."""
    if template is None:
        from ..template import load_default

        template = load_default()
    sk = template.skeleton
    nj = sk.num_joints
    index = index if index is not None else corr.build_index(template)
    if index.num_joints != nj:
        raise DualPMError(f"fit: the index has {index.num_joints} joints, the template {nj}")
    prior = (prior if prior is not None else load_pose_prior()).for_skeleton(sk)
    anc = np.zeros((nj, nj), dtype=bool)
    child = np.full((nj, nj), -1)
    for k in range(nj):
        chain = sk.chain_to_root(k)
        anc[k, chain] = True
        for a, b in zip(chain[1:], chain[:-1]):
            child[a, k] = b
    depth = anc.sum(axis=1) - 1
    levels = [np.nonzero(depth == d)[0] for d in range(1, depth.max() + 1)]
    lr = sk.local_rest_matrices
    fixed = np.isin(np.array(sk.joint_names), FIXED_BONES) | np.all(prior.sample_std < RIGID_STD, axis=1)
    fixed[0] = True
    dom = dominant_joints(template.skin_joints, template.skin_weights)
    return FitContext(template, index, prior, anc, child, levels, scale_groups(sk),
                      np.linalg.inv(sk.rest_matrices), lr[:, :3, :3].copy(), lr[:, :3, 3].copy(), fixed,
                      np.bincount(dom, minlength=nj) > 0,
                      np.array([sk.index(b) for b in CORE_BONES if b in sk.joint_names], dtype=np.int64),
                      body_parts(sk))
