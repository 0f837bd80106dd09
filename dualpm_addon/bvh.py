"""BVH motion capture: a strict, fast reader, a writer and forward kinematics vectorised over frames.

`read(path)` returns a `Motion`: the joint hierarchy (names, parents, rest offsets, channels, End
Sites), the frame time and the raw channel table (frames x channels, file units and degrees).
`Motion.world_positions()` gives joint heads (frames x joints x 3) in the file's own units and axes.

Semantics (the same as Blender's importer, io_anim_bvh, which the tests compare against):

* A joint's frame starts world-aligned at rest: OFFSET is its head relative to its parent's head.
* Rotation channels combine in the written order as intrinsic rotations: `Zrotation Xrotation
  Yrotation` means R = Rz @ Rx @ Ry (a point is turned by Ry first).
* Position channels replace OFFSET: the joint's local translation is (Xposition, Yposition,
  Zposition) in its parent's frame; a position axis that is not written is 0 (as in Blender).
* Scale channels (the 9-channel form) scale the joint's frame and so its children's offsets.
  Blender's importer ignores them; files with scale channels are the only ones where we differ.
* Any of 0, 3, 6 or 9 channels (any subset without repeats) per joint, any order; End Sites;
  several ROOTs (Blender's exporter writes a channel-less dummy root instead); CRLF or CR line
  ends, tabs, exponents, extra whitespace; joint names with spaces are joined with `_` and
  duplicate names get `.001` suffixes, as Blender does.

Damaged files (every case is one line, with the line number):

* Anything wrong in HIERARCHY or the MOTION header is a DualPMError.
* A motion row with the wrong number of values, or a value that is not a finite number, is a
  DualPMError: the columns would be misaligned from there on.
* Accepted with a `BVHWarning` (a user would want the motion that is there): the last row cut
  short (a truncated file: that row is dropped) and a frame count in the header that disagrees
  with the rows present (the rows win). `read(path, strict=True)` makes these errors too.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_open
from .errors import DualPMError
from .rotations import matrix_to_euler, quat_to_matrix

POSITION = ("Xposition", "Yposition", "Zposition")
ROTATION = ("Xrotation", "Yrotation", "Zrotation")
SCALE = ("Xscale", "Yscale", "Zscale")
_CANONICAL = {c.lower(): c for c in POSITION + ROTATION + SCALE}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
MAX_JOINTS = 100_000  # guards against pathological files, far above any real rig or clip
MAX_FRAMES = 10_000_000


class BVHWarning(UserWarning):
    """A damaged but usable BVH file (see the module docstring for the cases)."""


@dataclass(frozen=True)
class Motion:
    joint_names: tuple[str, ...]
    parents: np.ndarray  # (J,) int, -1 for a root; parents come before children
    offsets: np.ndarray  # (J, 3) rest head relative to the parent's head (file units)
    channels: tuple[tuple[str, ...], ...]  # per joint, canonical names in written order
    frame_time: float  # seconds
    data: np.ndarray  # (F, C) channel values in file order (file units, degrees)
    end_sites: np.ndarray = field(default=None)  # (J, 3) End Site offset, NaN where none

    def __post_init__(self):
        j = len(self.joint_names)
        if self.end_sites is None:
            object.__setattr__(self, "end_sites", np.full((j, 3), np.nan))
        parents = np.asarray(self.parents)
        if j == 0:
            raise DualPMError("motion has no joints")
        if parents.shape != (j,) or np.any(parents >= np.arange(j)) or np.any(parents < -1):
            raise DualPMError("motion: every parent must come before its child")
        if np.shape(self.offsets) != (j, 3) or np.shape(self.end_sites) != (j, 3) or len(self.channels) != j:
            raise DualPMError("motion: offsets, end_sites and channels need one entry per joint")
        data = np.asarray(self.data)
        if data.ndim != 2 or data.shape[1] != sum(len(c) for c in self.channels):
            raise DualPMError(f"motion: data has shape {data.shape}, expected (frames, {self.num_channels})")

    # -- structure ---------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise DualPMError(f"motion has no joint named {name!r}") from None

    def channel_columns(self) -> list[dict[str, int]]:
        """Per joint: canonical channel name -> column in `data`."""
        out, col = [], 0
        for chans in self.channels:
            out.append({c: col + i for i, c in enumerate(chans)})
            col += len(chans)
        return out

    def rest_positions(self) -> np.ndarray:
        """(J, 3) rest heads, file units."""
        p = np.zeros((self.num_joints, 3))
        for j in range(self.num_joints):
            par = self.parents[j]
            p[j] = self.offsets[j] + (p[par] if par >= 0 else 0.0)
        return p

    def rest_tails(self) -> np.ndarray:
        """(J, 3) rest tails by Blender's rule: End Site, else the mean of the children's heads,
        else the head itself."""
        heads = self.rest_positions()
        tails = heads.copy()
        for j in range(self.num_joints):
            kids = np.nonzero(self.parents == j)[0]
            if not np.isnan(self.end_sites[j, 0]):
                tails[j] = heads[j] + self.end_sites[j]
            elif len(kids):
                tails[j] = heads[kids].mean(axis=0)
        return tails

    # -- channels to local transforms --------------------------------------------------------
    def local_translations(self) -> np.ndarray:
        """(F, J, 3): OFFSET, or the position channels where a joint has any."""
        cols = self.channel_columns()
        out = np.broadcast_to(self.offsets, (self.num_frames, self.num_joints, 3)).copy()
        for j, c in enumerate(cols):
            if any(p in c for p in POSITION):
                for a, p in enumerate(POSITION):
                    out[:, j, a] = self.data[:, c[p]] if p in c else 0.0
        return out

    def _local_quaternions_soa(self) -> np.ndarray:
        """(4, J, F): w, x, y, z of every joint's local rotation, each a contiguous run of frames.

        Built from half-angle quaternions multiplied in the written order: elementwise work only,
        one batch per distinct channel order.
        """
        f, jn = self.num_frames, self.num_joints
        out = np.zeros((4, jn, f))
        out[0] = 1.0
        groups: dict[str, list[tuple[int, list[int]]]] = {}
        for j, c in enumerate(self.channel_columns()):
            order = "".join(n[0] for n in self.channels[j] if n in ROTATION)
            if order:
                groups.setdefault(order, []).append((j, [c[a + "rotation"] for a in order]))
        for order, members in groups.items():
            joints = [m[0] for m in members]
            idx = np.array([m[1] for m in members])  # (k, n_axes)
            half = np.ascontiguousarray(np.radians(self.data[:, idx]).transpose(2, 1, 0)) * 0.5  # (n, k, F)
            cos, sin = np.cos(half), np.sin(half)
            q = None
            for a, axis in enumerate(order):
                qa = np.zeros((4,) + half.shape[1:])
                qa[0] = cos[a]
                qa[1 + "XYZ".index(axis)] = sin[a]
                q = qa if q is None else _qmul(q, qa)
            out[:, joints] = q
        return out

    def local_quaternions(self) -> np.ndarray:
        """(F, J, 4) local rotations (w, x, y, z) from the rotation channels (identity where none)."""
        return np.ascontiguousarray(self._local_quaternions_soa().transpose(2, 1, 0))

    def local_rotations(self) -> np.ndarray:
        """(F, J, 3, 3) local rotation matrices from the rotation channels."""
        return quat_to_matrix(self.local_quaternions())

    def local_scales(self) -> np.ndarray | None:
        """(F, J, 3) scale factors, or None when the file has no scale channels."""
        cols = self.channel_columns()
        if not any(s in c for c in cols for s in SCALE):
            return None
        out = np.ones((self.num_frames, self.num_joints, 3))
        for j, c in enumerate(cols):
            for a, s in enumerate(SCALE):
                if s in c:
                    out[:, j, a] = self.data[:, c[s]]
        return out

    # -- forward kinematics ------------------------------------------------------------------
    def world_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """World linear parts (F, J, 3, 3) (rotation, times scale where scaled) and heads (F, J, 3)."""
        scales = self.local_scales()
        if scales is None:
            q, pos = self.world_quaternions()
            return quat_to_matrix(q), pos
        # Scale channels: matrices, one batched product per joint over all frames.
        lin_l = self.local_rotations() * scales[:, :, None, :]
        trans = self.local_translations()
        lin = np.empty_like(lin_l)
        pos = np.empty_like(trans)
        for j in range(self.num_joints):
            p = self.parents[j]
            if p < 0:
                lin[:, j], pos[:, j] = lin_l[:, j], trans[:, j]
            else:
                lin[:, j] = lin[:, p] @ lin_l[:, j]
                pos[:, j] = pos[:, p] + np.einsum("fab,fb->fa", lin[:, p], trans[:, j])
        return lin, pos

    def world_quaternions(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (F, J, 4) and heads (F, J, 3), ignoring scale channels.

        Because BVH rest frames are world-aligned, a world rotation is also the joint's rotation
        away from its rest orientation (what retargeting carries).
        """
        qw, pw = self._world_soa()
        return np.ascontiguousarray(qw.transpose(2, 1, 0)), np.ascontiguousarray(pw.transpose(2, 1, 0))

    def _world_soa(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (4, J, F) and heads (3, J, F). Parents come first, so one pass in index
        order evaluates every chain; each step is elementwise over contiguous runs of frames."""
        ql = self._local_quaternions_soa()
        tl = np.ascontiguousarray(self.local_translations().transpose(2, 1, 0))  # (3, J, F)
        qw = np.empty_like(ql)
        pw = np.empty_like(tl)
        for j in range(self.num_joints):
            p = self.parents[j]
            if p < 0:
                qw[:, j], pw[:, j] = ql[:, j], tl[:, j]
            else:
                qw[:, j] = _qmul(qw[:, p], ql[:, j])
                pw[:, j] = pw[:, p] + _qrot(qw[:, p], tl[:, j])
        return qw, pw

    def world_positions(self) -> np.ndarray:
        """(F, J, 3) joint heads in the file's units and axes."""
        if self.local_scales() is None:
            return self.world_quaternions()[1]
        return self.world_transforms()[1]

    def end_site_positions(self) -> np.ndarray:
        """(F, J, 3) End Site positions, NaN for joints without one."""
        lin, pos = self.world_transforms()
        return pos + np.einsum("fjab,jb->fja", lin, np.nan_to_num(self.end_sites)) + np.where(
            np.isnan(self.end_sites), np.nan, 0.0)

    # -- editing -----------------------------------------------------------------------------
    def scaled(self, factor: float) -> "Motion":
        """The same motion in other units: offsets, End Sites and position channels times `factor`."""
        data = np.array(self.data, dtype=np.float64)
        for j, c in enumerate(self.channel_columns()):
            for p in POSITION:
                if p in c:
                    data[:, c[p]] *= factor
        return Motion(self.joint_names, self.parents, self.offsets * factor, self.channels, self.frame_time,
                      data, self.end_sites * factor)

    def with_rest_pose(self, rest_rotations: np.ndarray, rotation_order: str | None = None) -> "Motion":
        """The same animation (identical world positions every frame) over another rest pose.

        `rest_rotations` (J, 3, 3) are local rotations that pose the old rest into the new one.
        With C_j their world composition: OFFSET'_j = C_parent OFFSET_j, End'_j = C_j End_j,
        E'_j = C_parent E_j C_j^T and translations L'_j = C_parent L_j.
        """
        p_loc = np.asarray(rest_rotations, dtype=np.float64)
        c = np.empty_like(p_loc)
        for j in range(self.num_joints):
            par = self.parents[j]
            c[j] = p_loc[j] if par < 0 else c[par] @ p_loc[j]
        cp = np.array([c[par] if par >= 0 else np.eye(3) for par in self.parents])
        e = cp @ self.local_rotations() @ np.swapaxes(c, -1, -2)
        t = np.einsum("jab,fjb->fja", cp, self.local_translations())
        ends = np.einsum("jab,jb->ja", c, np.nan_to_num(self.end_sites)) + np.where(np.isnan(self.end_sites), np.nan, 0)
        has_pos = np.array([any(p in ch for p in POSITION) for ch in self.channels])
        order = rotation_order or next(("".join(n[0] for n in ch if n in ROTATION) for ch in self.channels
                                        if sum(n in ROTATION for n in ch) == 3), "ZXY")
        return from_local(self.joint_names, self.parents, np.einsum("jab,jb->ja", cp, self.offsets), e, t,
                          frame_time=self.frame_time, rotation_order=order, position_joints=has_pos, end_sites=ends)

    def with_dummy_root(self, name: str = "__0") -> "Motion":
        """A channel-less root at the origin above the current roots, as Blender's exporter writes."""
        if name in self.joint_names:
            raise DualPMError(f"joint name {name!r} is already used")
        parents = np.concatenate([[-1], np.where(self.parents < 0, 0, self.parents + 1)])
        return Motion((name,) + self.joint_names, parents, np.vstack([np.zeros(3), self.offsets]),
                      ((),) + self.channels, self.frame_time, self.data,
                      np.vstack([np.full(3, np.nan), self.end_sites]))

    def renamed(self, names) -> "Motion":
        names = tuple(str(n) for n in names)
        if len(names) != self.num_joints or len(set(names)) != len(names):
            raise DualPMError("renamed motion needs one distinct name per joint")
        return Motion(names, self.parents, self.offsets, self.channels, self.frame_time, self.data, self.end_sites)

    def frames(self, start: int, stop: int | None = None) -> "Motion":
        return Motion(self.joint_names, self.parents, self.offsets, self.channels, self.frame_time,
                      self.data[start:stop], self.end_sites)


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions stored component-first: a, b (4, ...) -> (4, ...)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def _qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (3, ...) by unit quaternions q (4, ...), both component-first."""
    w, x, y, z = q
    vx, vy, vz = v
    tx, ty, tz = 2 * (y * vz - z * vy), 2 * (z * vx - x * vz), 2 * (x * vy - y * vx)
    return np.stack([vx + w * tx + (y * tz - z * ty),
                     vy + w * ty + (z * tx - x * tz),
                     vz + w * tz + (x * ty - y * tx)])


# ----------------------------------------------------------------------------------------------
# building a motion from poses


def from_local(joint_names, parents, offsets, rotations, translations=None, *, frame_time: float,
               rotation_order: str = "ZXY", position_joints=None, end_sites=None) -> Motion:
    """A Motion from local rotations (F, J, 3, 3) and local translations (F, J, 3).

    `position_joints` (bool per joint) says which joints get position channels; by default the
    roots and every joint whose translation differs from its OFFSET in some frame. Euler angles
    are unwrapped over frames so the curves have no 360 degree jumps.
    """
    parents = np.asarray(parents, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    f, jn = rotations.shape[:2]
    order = rotation_order.upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise DualPMError(f"rotation order {rotation_order!r} is not a permutation of XYZ")
    if translations is None:
        translations = np.broadcast_to(offsets, (f, jn, 3))
    translations = np.asarray(translations, dtype=np.float64)
    if position_joints is None:
        moving = np.any(np.abs(translations - offsets) > 1e-9 * (1 + np.abs(offsets)), axis=(0, 2))
        position_joints = moving | (parents < 0)
    position_joints = np.asarray(position_joints, dtype=bool)
    angles = np.degrees(np.unwrap(matrix_to_euler(rotations, order), axis=0)) if f else np.zeros((0, jn, 3))
    chans, cols = [], []
    for j in range(jn):
        c = []
        if position_joints[j]:
            c += list(POSITION)
            cols.append(translations[:, j, :])
        c += [a + "rotation" for a in order]
        cols.append(angles[:, j, :])
        chans.append(tuple(c))
    data = np.concatenate(cols, axis=1) if cols else np.zeros((f, 0))
    es = np.full((jn, 3), np.nan) if end_sites is None else np.asarray(end_sites, dtype=np.float64)
    return Motion(tuple(joint_names), parents, offsets, tuple(chans), float(frame_time), data, es)


def skeleton_world_pose(skeleton, posed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-aligned joint rotations (..., J, 3, 3) and heads (..., J, 3) from posed bone frames.

    A Skeleton's bone frames carry their rest orientation (Y along the bone); a BVH joint's frame
    is the identity at rest. W_j = G_j R_j^T removes the rest orientation, so W_j is the joint's
    world rotation away from its rest: exactly a BVH world rotation.
    """
    rest = np.asarray(skeleton.rest_frames, dtype=np.float64)
    return posed[..., :3, :3] @ np.swapaxes(rest, -1, -2), posed[..., :3, 3]


def from_skeleton_pose(skeleton, rotations, root_translation=None, offsets=None, *, frame_time: float,
                       rotation_order: str = "ZXY", position_joints=None, scale: float = 1.0) -> Motion:
    """A Motion that reproduces a Skeleton pose sequence exactly (heads in model space x `scale`).

    OFFSETs are the rest head differences; End Sites are the rest tails of childless bones; local
    BVH rotations are E_j = W_parent^T W_j, and joints whose head moves relative to its parent
    (IK-controller feet with offsets) get position channels.
    """
    g = skeleton.forward_kinematics(rotations, root_translation, offsets=offsets)
    w, heads = skeleton_world_pose(skeleton, g)
    parents = np.asarray(skeleton.parents)
    rest_heads = np.asarray(skeleton.rest_heads, dtype=np.float64)
    off = rest_heads.copy()
    off[1:] -= rest_heads[parents[1:]]
    local_rot = w.copy()
    local_t = heads.copy()
    wp = w[:, parents[1:]]
    local_rot[:, 1:] = np.swapaxes(wp, -1, -2) @ w[:, 1:]
    local_t[:, 1:] = np.einsum("fjba,fjb->fja", wp, heads[:, 1:] - heads[:, parents[1:]])
    ends = np.full(off.shape, np.nan)
    leaf = np.ones(len(parents), dtype=bool)
    leaf[parents[1:]] = False
    ends[leaf] = (np.asarray(skeleton.rest_tails) - rest_heads)[leaf]
    return from_local(skeleton.joint_names, parents, off * scale, local_rot, local_t * scale,
                      frame_time=frame_time, rotation_order=rotation_order,
                      position_joints=position_joints, end_sites=ends * scale)


# ----------------------------------------------------------------------------------------------
# reading


def _error(source: str, line: int | None, reason: str) -> DualPMError:
    where = f"{source}: line {line}" if line else source
    return DualPMError(f"{where}: {reason}")


def _number(tok: str, source: str, line: int, what: str) -> float:
    if not _NUMBER.match(tok):
        raise _error(source, line, f"{what}: {tok[:40]!r} is not a number")
    v = float(tok)
    if not math.isfinite(v):
        raise _error(source, line, f"{what}: {tok[:40]!r} is not finite")
    return v


def read(path, *, strict: bool = False) -> Motion:
    """Read a BVH file; every failure is a one-line DualPMError naming the file and the line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DualPMError(f"{path}: cannot read BVH file ({e.strerror or e})") from None
    return parse(raw, source=path, strict=strict)


def parse(text, *, source: str = "BVH", strict: bool = False) -> Motion:
    """Parse BVH text (str or bytes)."""
    # One rule whether the text came from a file or a string: NUL never belongs in BVH.
    if (b"\0" if isinstance(text, (bytes, bytearray)) else "\0") in text:
        raise _error(source, None, "not a text file (contains NUL bytes)")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("latin-1")  # joint names from old tools; the numbers are ASCII
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    m = re.search(r"^[ \t\f\v]*MOTION[ \t\f\v]*$", text, re.MULTILINE | re.IGNORECASE)
    if m is None:
        head_text, motion_text, motion_line = text, None, 0
    else:
        head_text, motion_text = text[: m.start()], text[m.end():]
        motion_line = head_text.count("\n") + 1
    joints = _parse_hierarchy(head_text, source, has_motion=motion_text is not None)
    names, parents, offsets, channels, end_sites = joints
    if motion_text is None:
        raise _error(source, head_text.rstrip().count("\n") + 1, "no MOTION section after the hierarchy")
    num_channels = sum(len(c) for c in channels)
    frame_time, data = _parse_motion(motion_text, motion_line, num_channels, source, strict)
    return Motion(tuple(names), np.array(parents, dtype=np.int64), np.array(offsets, dtype=np.float64).reshape(-1, 3),
                  tuple(channels), frame_time, data, np.array(end_sites, dtype=np.float64).reshape(-1, 3))


def _tokens(text: str):
    """(token, line number) pairs; braces are tokens of their own even when glued to a word."""
    out = []
    for n, line in enumerate(text.split("\n"), start=1):
        if "{" in line or "}" in line:
            line = line.replace("{", " { ").replace("}", " } ")
        for tok in line.split():
            out.append((tok, n))
    return out


def _parse_hierarchy(text: str, source: str, has_motion: bool):
    toks = _tokens(text)
    if not toks or toks[0][0].upper() != "HIERARCHY":
        raise _error(source, toks[0][1] if toks else 1, "not a BVH file (it does not start with HIERARCHY)")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[list[float]] = []
    has_offset: list[bool] = []
    stack: list[int] = []  # open joints; -2 marks an open End Site
    opened: list[int] = []
    i, n = 1, len(toks)

    def need(k: int, what: str, line: int):
        if i + k > n:
            raise _error(source, line, f"file ends inside {what}")

    while i < n:
        tok, line = toks[i]
        key = tok.upper()
        if key in ("ROOT", "JOINT"):
            if key == "JOINT" and not stack:
                raise _error(source, line, "JOINT outside any ROOT")
            if key == "ROOT" and stack:
                raise _error(source, line, "ROOT inside another joint")
            if stack and stack[-1] == -2:
                raise _error(source, line, "JOINT inside an End Site")
            i += 1
            words = []
            while i < n and toks[i][1] == line and toks[i][0] != "{":
                words.append(toks[i][0])
                i += 1
            if not words:
                raise _error(source, line, f"{key} without a name")
            name = "_".join(words)
            if name in names:  # Blender's rule for duplicate names
                k = 1
                while f"{name}.{k:03d}" in names:
                    k += 1
                name = f"{name}.{k:03d}"
            if i >= n or toks[i][0] != "{":
                raise _error(source, toks[i][1] if i < n else line, f"expected '{{' after {key} {name}")
            i += 1
            if len(names) >= MAX_JOINTS:
                raise _error(source, line, f"more than {MAX_JOINTS} joints")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            end_sites.append([math.nan] * 3)
            has_offset.append(False)
            stack.append(len(names) - 1)
            opened.append(line)
        elif key == "END":
            if not stack or stack[-1] == -2:
                raise _error(source, line, "End Site outside a joint")
            if i + 1 >= n or toks[i + 1][0].upper() != "SITE":
                raise _error(source, line, "expected 'End Site'")
            i += 2
            while i < n and toks[i][1] == line and toks[i][0] != "{":
                i += 1  # some files name their End Sites; the name is not used
            if i >= n or toks[i][0] != "{":
                raise _error(source, line, "expected '{' after End Site")
            if not math.isnan(end_sites[stack[-1]][0]):
                raise _error(source, line, f"joint {names[stack[-1]]} has a second End Site")
            i += 1
            need(4, "an End Site", line)
            if toks[i][0].upper() != "OFFSET":
                raise _error(source, toks[i][1], f"expected OFFSET in End Site, found {toks[i][0][:40]!r}")
            end_sites[stack[-1]] = [_number(t, source, ln, "End Site OFFSET") for t, ln in toks[i + 1:i + 4]]
            i += 4
            if i >= n or toks[i][0] != "}":
                raise _error(source, toks[i][1] if i < n else line, "expected '}' to close the End Site")
            i += 1
        elif key == "OFFSET":
            if not stack:
                raise _error(source, line, "OFFSET outside a joint")
            j = stack[-1]
            if has_offset[j]:
                raise _error(source, line, f"joint {names[j]} has a second OFFSET")
            need(4, "an OFFSET", line)
            offsets[j] = [_number(t, source, ln, "OFFSET") for t, ln in toks[i + 1:i + 4]]
            has_offset[j] = True
            i += 4
        elif key == "CHANNELS":
            if not stack:
                raise _error(source, line, "CHANNELS outside a joint")
            j = stack[-1]
            if channels[j]:
                raise _error(source, line, f"joint {names[j]} has a second CHANNELS line")
            need(2, "a CHANNELS line", line)
            count_tok = toks[i + 1][0]
            if not (count_tok.isascii() and count_tok.isdigit()) or int(count_tok) > 9:
                raise _error(source, line, f"CHANNELS count {count_tok[:40]!r} is not a number from 0 to 9")
            k = int(count_tok)
            need(2 + k, "a CHANNELS line", line)
            chans = []
            for t, ln in toks[i + 2:i + 2 + k]:
                c = _CANONICAL.get(t.lower())
                if c is None:
                    raise _error(source, ln, f"unknown channel {t[:40]!r}")
                if c in chans:
                    raise _error(source, ln, f"channel {c} repeated")
                chans.append(c)
            channels[j] = tuple(chans)
            i += 2 + k
        elif tok == "}":
            if not stack:
                raise _error(source, line, "'}' without an open joint")
            j = stack.pop()
            opened.pop()
            if not has_offset[j]:
                raise _error(source, line, f"joint {names[j]} has no OFFSET")
            i += 1
        elif tok == "{":
            raise _error(source, line, "unexpected '{'")
        else:
            raise _error(source, line, f"unexpected {tok[:40]!r} in HIERARCHY")
    if stack:
        raise _error(source, opened[-1], f"joint {names[stack[-1]]} is never closed")
    if not names:
        raise _error(source, toks[-1][1], "HIERARCHY has no joints")
    return names, parents, offsets, channels, end_sites


def _header_value(line: str, labels: tuple[str, ...]) -> str | None:
    """The value after a 'Frames:' / 'Frame Time:' label, tolerant of spacing around the colon."""
    words = line.replace(":", " : ").split()
    lab = [w.lower() for w in words]
    for label in labels:
        want = label.lower().replace(":", " : ").split()
        if lab[: len(want)] == want and len(words) == len(want) + 1:
            return words[-1]
    return None


def _parse_motion(text: str, first_line: int, num_channels: int, source: str, strict: bool):
    lines = text.split("\n")
    # lines[0] is the rest of the MOTION line (empty); header lines follow, blank lines allowed.
    k, header = 1, []
    while k < len(lines) and len(header) < 2:
        if lines[k].strip():
            header.append((lines[k], first_line + k))
        k += 1
    if len(header) < 1:
        raise _error(source, first_line, "MOTION without a 'Frames:' line")
    frames_tok = _header_value(header[0][0], ("Frames:",))
    if frames_tok is None or not (frames_tok.isascii() and frames_tok.isdigit()):
        raise _error(source, header[0][1], f"expected 'Frames: N', found {header[0][0].strip()[:60]!r}")
    declared = int(frames_tok)
    if len(header) < 2:
        raise _error(source, header[0][1], "MOTION without a 'Frame Time:' line")
    ft_tok = _header_value(header[1][0], ("Frame Time:", "FrameTime:"))
    if ft_tok is None:
        raise _error(source, header[1][1], f"expected 'Frame Time: T', found {header[1][0].strip()[:60]!r}")
    frame_time = _number(ft_tok, source, header[1][1], "Frame Time")
    if frame_time <= 0:
        raise _error(source, header[1][1], f"Frame Time {ft_tok} is not positive")
    body_line = first_line + k  # file line number of lines[k]
    body = "\n".join(lines[k:])
    if num_channels == 0:
        # Nothing to read: every frame is the rest pose (a hierarchy-only file or dummy rig).
        if declared > MAX_FRAMES:
            raise _error(source, header[0][1], f"{declared} frames is more than {MAX_FRAMES}")
        if body.strip():
            extra = next(i for i, r in enumerate(lines[k:]) if r.strip())
            raise _error(source, body_line + extra, "motion values, but no joint has channels")
        return frame_time, np.zeros((declared, 0))
    data = _parse_rows(body, body_line, num_channels, source, strict)
    got = data.shape[0]
    if got != declared:
        msg = f"the header says {declared} frames but the file has {got}"
        if strict or got == 0:
            raise _error(source, header[0][1], msg)
        warnings.warn(f"{source}: line {header[0][1]}: {msg}; reading {got}", BVHWarning, stacklevel=4)
    return frame_time, data


def _row_token_counts(body: str) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-separated tokens on each line, and each line's start offset, without splitting.

    Byte arithmetic over the whole block: a token starts where a non-blank follows a blank.
    """
    if body.isascii():
        b = np.frombuffer(body.encode("ascii"), dtype=np.uint8)
        starts = np.concatenate([[0], np.flatnonzero(b == 10) + 1])
        blank = b <= 32
        tok = ~blank
        tok[1:] &= blank[:-1]
        # Tokens before each line start, by binary search in the token positions.
        before = np.searchsorted(np.flatnonzero(tok), np.append(starts, len(b)))
        return np.diff(before), starts
    rows = body.split("\n")
    counts = np.array([len(r.split()) for r in rows], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum([len(r) + 1 for r in rows])[:-1]]).astype(np.int64)
    return counts, starts


def _parse_rows(body: str, body_line: int, num_channels: int, source: str, strict: bool) -> np.ndarray:
    """(F, C) values from the motion rows; line numbers in errors count from `body_line`."""
    counts, starts = _row_token_counts(body)
    nonempty = np.flatnonzero(counts)
    bad = nonempty[counts[nonempty] != num_channels]
    end = len(body)
    rows = len(nonempty)
    if len(bad):
        i = int(bad[0])
        last = bad[-1] == nonempty[-1] and counts[bad[-1]] < num_channels
        if len(bad) > 1 or not last or strict:
            raise _error(source, body_line + i, f"expected {num_channels} values, found {counts[i]}")
        warnings.warn(f"{source}: line {body_line + i}: motion cut short ({counts[i]} of {num_channels} "
                      f"values); the incomplete last frame is dropped", BVHWarning, stacklevel=5)
        end = int(starts[i])
        rows -= 1
    if rows == 0:
        return np.zeros((0, num_channels))
    block = body[:end]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # numpy warns when it stops before the end: a bad value
        values = np.fromstring(block, dtype=np.float64, sep=" ")
    if caught or values.size != rows * num_channels or not np.all(np.isfinite(values)):
        _locate_bad_value(block, body_line, source)
        # Every token is a plain number, yet numpy read them differently (exotic whitespace).
        values = np.array(block.split(), dtype=np.float64)
    return values.reshape(rows, num_channels)


def _locate_bad_value(block: str, body_line: int, source: str):
    for i, row in enumerate(block.split("\n")):
        for tok in row.split():
            if not _NUMBER.match(tok):
                raise _error(source, body_line + i, f"{tok[:40]!r} is not a number")
            if not math.isfinite(float(tok)):
                raise _error(source, body_line + i, f"{tok[:40]!r} is not finite")


# ----------------------------------------------------------------------------------------------
# writing


def _fmt(v: float) -> str:
    s = f"{v:.9g}"
    return "0" if s == "-0" else s


def dumps(motion: Motion) -> str:
    """BVH text in the layout Blender writes (tabs, one frame per line, '\\n' line ends)."""
    out = ["HIERARCHY"]
    children = [[] for _ in range(motion.num_joints)]
    roots = []
    for j, p in enumerate(motion.parents):
        (children[p] if p >= 0 else roots).append(j)
    order: list[int] = []
    # Depth-first without recursion: deep chains (a long tail, a rope) never hit Python's limit.
    stack: list[tuple[int, int, bool]] = [(r, 0, False) for r in reversed(roots)]
    while stack:
        j, depth, closing = stack.pop()
        ind = "\t" * depth
        if closing:
            if not np.isnan(motion.end_sites[j, 0]):
                out.append(f"{ind}\tEnd Site")
                out.append(f"{ind}\t{{")
                out.append(f"{ind}\t\tOFFSET " + " ".join(_fmt(v) for v in motion.end_sites[j]))
                out.append(f"{ind}\t}}")
            out.append(f"{ind}}}")
            continue
        order.append(j)
        name = motion.joint_names[j]
        if not name or any(c.isspace() for c in name) or "{" in name or "}" in name:
            raise DualPMError(f"joint name {name!r} cannot be written to BVH (empty, spaces or braces)")
        out.append(f"{ind}{'ROOT' if motion.parents[j] < 0 else 'JOINT'} {name}")
        out.append(f"{ind}{{")
        out.append(f"{ind}\tOFFSET " + " ".join(_fmt(v) for v in motion.offsets[j]))
        out.append(f"{ind}\tCHANNELS {len(motion.channels[j])}" + "".join(" " + c for c in motion.channels[j]))
        stack.append((j, depth, True))
        stack.extend((c, depth + 1, False) for c in reversed(children[j]))

    # Joints are written depth-first; reorder the data columns when the stored order differs.
    cols = motion.channel_columns()
    perm = [cols[j][c] for j in order for c in motion.channels[j]]
    data = np.asarray(motion.data, dtype=np.float64)[:, perm]
    out.append("MOTION")
    out.append(f"Frames: {motion.num_frames}")
    out.append(f"Frame Time: {_fmt(motion.frame_time)}")
    if data.shape[1]:
        rounded = np.where(np.abs(data) < 1e-12, 0.0, data)
        out.extend(" ".join(_fmt(v) for v in row) for row in rounded)
    return "\n".join(out) + "\n"


def write(path, motion: Motion) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    with atomic_open(path, "w", "BVH file", encoding="utf-8", newline="\n") as f:
        f.write(dumps(motion))
