"""Retargeting BVH motion onto a target Skeleton (a baked template or a fitted rig).

For every target bone j driven by source joint s(j) (see bone_map.py), with A_s(t) the source
joint's world rotation away from its own rest (a BVH world rotation, since BVH rest frames are
world-aligned) and R_j the target bone's rest frame:

    W_j(t) = G A_s(t) G^T K_j R_j

* G turns the source's world axes into the target's (Y-up mocap onto a Z-up rig): the body
  frames (left, forward, up) found by `bone_map.analyse`, snapped to the nearest axis
  permutation when within 30 degrees of one.
* K_j aligns the two rests: the rotation that best carries the target bone's rest vectors to its
  paired descendants onto the source's (Kabsch; a single vector gives the shortest arc). With it
  the result does not depend on the rest pose either rig was built in: T-pose, A-pose or
  quadruped stance, a bone points where its source bone points.
* Unpaired target bones keep their rest pose relative to their parents.
* The target root moves so that its topmost paired bone follows its source joint, the
  displacement from rest scaled by the ratio of leg lengths (summed bone lengths from where each
  leg meets its partner down to the foot) and turned by G. `in_place` drops the horizontal part.
* Source joints with position channels below the root (IK feet, stretchy bones) carry their
  displacement as local head offsets (Skeleton.forward_kinematics `offsets`), scaled likewise.
* Foot contacts are found in the source (foot low and slow) and held on the target: during a
  contact the foot stays where it was on average, reached by analytic two-bone IK on the leg
  (ik.py), blended in and out over a few frames.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from . import bone_map as bm
from .errors import DualPMError
from .ik import two_bone_ik
from .rotations import matrix_to_quat, quat_to_matrix, rotation_between
from .skeleton import Skeleton


@dataclass
class Retargeted:
    joint_names: tuple[str, ...]
    rotations: np.ndarray  # (F, J, 4) local quaternions (w, x, y, z) for the target skeleton
    root_translation: np.ndarray  # (F, 3) target model space
    offsets: np.ndarray  # (F, J, 3) local head offsets (zero unless the source moves joint heads)
    fps: float
    bone_map: bm.BoneMap
    contacts: dict[str, np.ndarray] = field(default_factory=dict)  # target foot -> (F,) bool
    scale: float = 1.0  # target units per source unit
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))  # G
    ground: np.ndarray | None = None  # (F, 3) how far the ground under the feet has moved (target space)

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    def posed(self, skeleton: Skeleton) -> np.ndarray:
        return skeleton.forward_kinematics(self.rotations, self.root_translation, offsets=self.offsets)


def skeleton_from_motion(motion) -> Skeleton:
    """A Skeleton for a BVH rig: rest frames are the identity (world-aligned, as in BVH), so
    local rotations are the BVH joint rotations themselves."""
    if np.sum(np.asarray(motion.parents) < 0) != 1:
        raise DualPMError("a BVH rig with several ROOTs cannot be a retargeting target")
    j = motion.num_joints
    return Skeleton(tuple(motion.joint_names), np.asarray(motion.parents, dtype=np.int64), motion.rest_positions(),
                    motion.rest_tails(), np.broadcast_to(np.eye(3), (j, 3, 3)).copy())


def _snap_rotation(g: np.ndarray, max_angle_deg: float = 30.0) -> np.ndarray:
    """The nearest signed axis permutation (a proper rotation) if within max_angle of g."""
    best, best_angle = g, np.inf
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            p = np.zeros((3, 3))
            p[range(3), perm] = signs
            if np.linalg.det(p) < 0:
                continue
            cos = np.clip((np.trace(p.T @ g) - 1) / 2, -1, 1)
            ang = np.degrees(np.arccos(cos))
            if ang < best_angle:
                best, best_angle = p, ang
    return best if best_angle <= max_angle_deg else g


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum |R src_i - dst_i|^2 over unit vectors (n, 3)."""
    h = src.T @ dst
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def _shortest_arc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return quat_to_matrix(rotation_between(u, v))


def _key_vectors(rig: bm.Rig, j: int, paired: set[int]) -> dict[int, np.ndarray]:
    """Rest vectors from j's head to the nearest paired joint down each child branch.

    Unpaired joints in between keep their rest pose, so they move rigidly with j; a paired joint
    stops the search (what lies below it turns with it, not with j), even where its head
    coincides with j's and gives no vector.
    """
    out = {}
    stack = list(rig.children(j))
    while stack:
        c = stack.pop()
        if c in paired:
            v = rig.heads[c] - rig.heads[j]
            if np.linalg.norm(v) > 1e-9 * rig.extent:
                out[c] = v
            continue
        stack.extend(rig.children(c))
    return out


def rest_alignment(source: bm.Rig, target: bm.Rig, pairs: list[tuple[int, int]], g: np.ndarray) -> dict[int, np.ndarray]:
    """K_j for each paired target joint (target world axes)."""
    t_to_s = dict(pairs)
    paired = set(t_to_s)
    out: dict[int, np.ndarray] = {}
    for t, s in pairs:
        keys = _key_vectors(target, t, paired)
        vt, vs = [], []
        for c, v in keys.items():
            w = source.heads[t_to_s[c]] - source.heads[s]
            if np.linalg.norm(w) > 1e-9 * source.extent:
                vt.append(v / np.linalg.norm(v))
                vs.append(g @ w / np.linalg.norm(w))
        if not vt:
            # A leaf: its own bone (tail, End Site) when both have one.
            v = target.tails[t] - target.heads[t]
            w = source.tails[s] - source.heads[s]
            if np.linalg.norm(v) > 1e-9 * target.extent and np.linalg.norm(w) > 1e-9 * source.extent:
                vt, vs = [v / np.linalg.norm(v)], [g @ w / np.linalg.norm(w)]
        if len(vt) >= 2 and np.linalg.matrix_rank(np.array(vt), tol=1e-6) >= 2:
            out[t] = _kabsch(np.array(vt), np.array(vs))
        elif vt:
            out[t] = _shortest_arc(vt[0], vs[0])
    # Bones with nothing to align by follow their nearest aligned ancestor.
    for t, _ in pairs:
        if t not in out:
            a = next((x for x in target.ancestors(t) if x in out), None)
            out[t] = out[a] if a is not None else np.eye(3)
    return out


def _local_from_world(skeleton: Skeleton, world: np.ndarray, joints=None) -> np.ndarray:
    """Local rotation matrices Rq_j = R_j^T R_p W_p^T W_j from world bone rotations W (F, J, 3, 3)."""
    rest = np.asarray(skeleton.rest_frames)
    parents = np.asarray(skeleton.parents)
    joints = range(skeleton.num_joints) if joints is None else joints
    out = {}
    for j in joints:
        p = parents[j]
        if p < 0:
            out[j] = rest[j].T @ world[:, j]
        else:
            out[j] = rest[j].T @ rest[p] @ np.swapaxes(world[:, p], -1, -2) @ world[:, j]
    return out


def ground_velocity(positions: np.ndarray, up: np.ndarray, leg_length: float, fps: float,
                    height_tol: float = 0.05) -> np.ndarray:
    """Horizontal velocity (3,) of the ground under the feet: zero for motion that travels, the
    treadmill speed for an in-place clip (game clips walk on the spot with the feet sliding back).

    The median velocity of feet that are down (within `height_tol` leg lengths of the ground).
    """
    f = positions.shape[0]
    if f < 2:
        return np.zeros(3)
    h = positions @ up
    ground = np.percentile(h, 5)
    vel = np.diff(positions, axis=0) * fps
    vel = vel - np.einsum("fk,c->fkc", vel @ up, up)
    down = (h[1:] - ground < height_tol * leg_length) & (h[:-1] - ground < height_tol * leg_length)
    if np.sum(down) < 2:
        return np.zeros(3)
    return np.median(vel[down], axis=0)


def detect_contacts(positions: np.ndarray, up: np.ndarray, leg_length: float, fps: float,
                    ground_velocity: np.ndarray | None = None, height_tol: float = 0.08,
                    speed_tol: float = 1.0, min_frames: int = 2) -> np.ndarray:
    """(F, K) bool: foot k touches the ground at frame f.

    A foot is in contact when it is within `height_tol` leg lengths of the ground (a low
    percentile of all feet heights, so a few bad frames do not move it) and moves over the ground
    (whose own velocity is `ground_velocity`, see above) slower than `speed_tol` leg lengths per
    second. One-frame gaps are filled, and contacts shorter than `min_frames` dropped.
    """
    f, k = positions.shape[:2]
    if f == 0:
        return np.zeros((0, k), dtype=bool)
    h = positions @ up
    ground = np.percentile(h, 5)
    rel = positions - (np.zeros(3) if ground_velocity is None else
                       np.arange(f)[:, None, None] / fps * np.asarray(ground_velocity)[None, None, :])
    speed = np.zeros((f, k))
    if f > 1:
        step = np.linalg.norm(np.diff(rel, axis=0), axis=-1) * fps
        speed[1:-1] = 0.5 * (step[:-1] + step[1:])
        speed[0], speed[-1] = step[0], step[-1]
    c = (h - ground < height_tol * leg_length) & (speed < speed_tol * leg_length)
    for j in range(k):
        col = c[:, j]
        if f > 2:
            col[1:-1] |= ~col[1:-1] & col[:-2] & col[2:]
        for a, b in _runs(col):
            if b - a < min_frames:
                col[a:b] = False
    return c


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, on in enumerate(np.append(flags, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            out.append((start, i))
            start = None
    return out


def retarget(motion, target: Skeleton, bone_map: bm.BoneMap | None = None, *, in_place: bool = False,
             foot_lock: bool = True, blend_frames: int = 3, progress=None) -> Retargeted:
    """Retarget a bvh.Motion onto `target`; see the module docstring for the method."""
    src_rig = bm.Rig.from_motion(motion)
    tgt_rig = bm.Rig.from_skeleton(target)
    if bone_map is None:
        bone_map = bm.auto_map(src_rig, tgt_rig)
    pairs = bone_map.index_pairs(src_rig, tgt_rig)
    if not pairs:
        raise DualPMError("no bone of the target rig could be paired with the motion's joints; give a bone map (--map)")
    f = motion.num_frames
    if f == 0:
        raise DualPMError("the motion has no frames")
    sa, ta = bm.analyse(src_rig), bm.analyse(tgt_rig)
    if sa is not None and ta is not None:
        g = _snap_rotation(ta.body_frame().T @ sa.body_frame())
        scale = ta.leg_length / sa.leg_length if sa.leg_length > 0 else 1.0
        up = ta.up
    else:
        g = np.eye(3)
        scale = tgt_rig.extent / src_rig.extent
        up = ta.up if ta is not None else np.array([0.0, 0.0, 1.0])
    k_align = rest_alignment(src_rig, tgt_rig, pairs, g)
    if progress:
        progress("forward kinematics of the source")
    src_q, src_p = motion.world_quaternions()
    src_w = quat_to_matrix(src_q)  # (F, Js, 3, 3)

    # World rotations of every target bone.
    rest = np.asarray(target.rest_frames)
    parents = np.asarray(target.parents)
    t_to_s = dict(pairs)
    world = np.empty((f, target.num_joints, 3, 3))
    for j in range(target.num_joints):
        if j in t_to_s:
            world[:, j] = g @ src_w[:, t_to_s[j]] @ g.T @ (k_align[j] @ rest[j])
        elif parents[j] >= 0:
            p = parents[j]
            world[:, j] = world[:, p] @ rest[p].T @ rest[j]
        else:
            world[:, j] = rest[j]
    local = _local_from_world(target, world)
    rot_local = np.stack([local[j] for j in range(target.num_joints)], axis=1)

    # Head offsets for joints whose source heads move relative to their parents.
    offsets = np.zeros((f, target.num_joints, 3))
    src_cols = motion.channel_columns()
    src_trans = None
    for j, s in pairs:
        sp = motion.parents[s]
        if parents[j] < 0 or sp < 0 or not any(c in src_cols[s] for c in ("Xposition", "Yposition", "Zposition")):
            continue
        if src_trans is None:
            src_trans = motion.local_translations()
        delta = src_trans[:, s] - motion.offsets[s]
        if np.max(np.abs(delta)) <= 1e-9 * src_rig.extent:
            continue
        d_world = scale * np.einsum("ab,fbc,fc->fa", g, src_w[:, sp], delta)
        p = parents[j]
        a_parent = world[:, p] @ rest[p].T  # the parent's rotation away from rest
        offsets[:, j] = np.einsum("ba,fcb,fc->fa", rest[j], a_parent, d_world)

    # Root motion: the topmost paired bone follows its source joint.
    if progress:
        progress("root motion")
    depth = [len(tgt_rig.ancestors(j)) for j in range(target.num_joints)]
    driver = min(t_to_s, key=lambda j: (depth[j], j))
    s_driver = t_to_s[driver]
    posed0 = target.forward_kinematics(rot_local, None, offsets=offsets)
    desired = target.rest_heads[driver] + scale * (src_p[:, s_driver] - src_rig.heads[s_driver]) @ g.T
    root_t = desired - posed0[:, driver, :3, 3]
    horizontal = root_t - np.outer(root_t @ up, up)
    if in_place:  # keep the first frame's horizontal placement, and all vertical motion
        root_t = root_t - horizontal + horizontal[0]
    heads = posed0[..., :3, 3] + root_t[:, None, :]

    # The ground moves under in-place clips (a treadmill): contacts are held relative to it.
    time = np.arange(f) / motion.fps
    ground = np.zeros((f, 3))
    if sa is not None:
        src_feet = np.stack([src_p[:, sa.chains[k][-1]] for k in _LEGS if k in sa.chains], axis=1)
        v_ground = ground_velocity(src_feet, sa.up, sa.leg_length, motion.fps)
        ground = np.outer(time, scale * (g @ v_ground))
    if in_place:
        ground = ground - (horizontal - horizontal[0])
    contacts: dict[str, np.ndarray] = {}
    if foot_lock and sa is not None and ta is not None:
        if progress:
            progress("foot contacts and IK")
        root_t = _lock_feet(motion.fps, target, sa, ta, src_p, world, rot_local, heads, root_t, ground,
                            contacts, blend_frames, ta.up)
    quats = matrix_to_quat(rot_local)
    # Neighbouring frames on the same hemisphere: smooth curves for interpolation.
    for i in range(1, f):
        flip = np.sum(quats[i] * quats[i - 1], axis=-1) < 0
        quats[i, flip] *= -1
    return Retargeted(tuple(target.joint_names), quats, root_t, offsets, motion.fps, bone_map, contacts, scale, g,
                      ground)


def _ik_chain(chain: list[int]) -> tuple[int, int, int, int] | None:
    """(hip, knee, ankle, foot) joints of a leg chain (the ankle is the foot when only 3 joints)."""
    if len(chain) >= 4:
        return chain[-4], chain[-3], chain[-2], chain[-1]
    if len(chain) == 3:
        return chain[0], chain[1], chain[2], chain[2]
    return None


_LEGS = ("front.L", "front.R", "hind.L", "hind.R")


def _lock_feet(fps, target, sa, ta, src_p, world, rot_local, heads, root_t, ground, contacts, blend_frames,
               up, reach: float = 0.995):
    """Hold the feet during source contacts (see the module docstring); returns the root translation,
    lowered where a held foot would otherwise be out of the leg's reach."""
    keys = [k for k in _LEGS if k in ta.chains and k in sa.chains]
    if not keys:
        return root_t
    src_feet = np.stack([src_p[:, sa.chains[k][-1]] for k in keys], axis=1)
    v_src = ground_velocity(src_feet, sa.up, sa.leg_length, fps)
    flags = detect_contacts(src_feet, sa.up, sa.leg_length, fps, v_src)
    rest = np.asarray(target.rest_frames)
    parents = np.asarray(target.parents)
    f = world.shape[0]
    legs = []
    for n, key in enumerate(keys):
        chain = _ik_chain(ta.chains[key])
        if chain is None:
            continue
        hip, knee, ankle, foot = chain
        contacts[target.joint_names[foot]] = flags[:, n].copy()
        goal = heads[:, foot].copy()
        weight = np.zeros(f)
        for a, b in _runs(flags[:, n]):
            # Held where it was on average over the contact, relative to the (moving) ground.
            goal[a:b] = (heads[a:b, foot] - ground[a:b]).mean(axis=0) + ground[a:b]
            weight[a:b] = 1.0
            for k in range(1, blend_frames + 1):  # ease in and out around the contact
                w = 1.0 - k / (blend_frames + 1)
                for i, anchor in ((a - k, a), (b - 1 + k, b - 1)):
                    if 0 <= i < f and w > weight[i]:
                        weight[i] = w
                        goal[i] = goal[anchor] + ground[i] - ground[anchor]
        if np.any(weight > 0):
            legs.append((chain, heads[:, foot] + weight[:, None] * (goal - heads[:, foot]), weight > 0))
    if not legs:
        return root_t
    # Lower the body where a held foot is beyond reach of its two-bone chain: the smallest drop
    # d along -up with |goal - (hip - d up)| <= reach (l1 + l2), spread smoothly over neighbours.
    drop = np.zeros(f)
    for (hip, knee, ankle, foot), foot_goal, active in legs:
        ankle_goal = heads[:, ankle] + foot_goal - heads[:, foot]
        v = ankle_goal - heads[:, hip]
        r = reach * (np.linalg.norm(heads[:, knee] - heads[:, hip], axis=-1) +
                     np.linalg.norm(heads[:, ankle] - heads[:, knee], axis=-1))
        vu = v @ up
        disc = vu**2 - np.sum(v * v, axis=-1) + r**2
        need = np.where(disc >= 0, -vu - np.sqrt(np.maximum(disc, 0)), 0.0)
        drop = np.maximum(drop, np.where(active & (np.linalg.norm(v, axis=-1) > r), np.maximum(need, 0), 0))
    if np.any(drop > 0):
        k = max(1, int(round(0.1 * fps)))
        padded = np.pad(drop, k, mode="edge")
        drop = np.max(np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1), axis=1)
        kernel = np.hanning(2 * k + 3)[1:-1]
        drop = np.convolve(np.pad(drop, k, mode="edge"), kernel / kernel.sum(), mode="valid")
        root_t = root_t - np.outer(drop, up)
        heads -= np.outer(drop, up)[:, None, :]
    for (hip, knee, ankle, foot), foot_goal, active in legs:
        ankle_goal = heads[active, ankle] + (foot_goal[active] - heads[active, foot])
        rot_a, rot_b, _ = two_bone_ik(heads[active, hip], heads[active, knee], heads[active, ankle], ankle_goal)
        world[active, hip] = rot_a @ world[active, hip]
        world[active, knee] = rot_b @ rot_a @ world[active, knee]
        # The knee's other children follow it; the ankle and the foot keep their world
        # orientation (the hoof stays as it was on the ground).
        for j in (hip, knee, ankle):
            p = parents[j]
            if p < 0:
                rot_local[active, j] = rest[j].T @ world[active, j]
            else:
                rot_local[active, j] = rest[j].T @ rest[p] @ np.swapaxes(world[active, p], -1, -2) @ world[active, j]
    return root_t
