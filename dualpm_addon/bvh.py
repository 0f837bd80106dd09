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

Hostile files (docs/bvh.md, "Limits"): reading is linear in the file's size (no recursion, no
search over the names read so far, tokens read lazily so a file is refused at the first joint over
a limit); the limits below are refused with a DualPMError, and every message is one line of at
most MESSAGE_CHARS characters (names, tokens and paths are cut with an ellipsis). Everything that
yields frames x joints arrays is capped at MAX_POSE_BYTES per result and computed in chunks of
frames of about CHUNK_BYTES of working memory.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_open
from .errors import DualPMError, clip
from .rotations import matrix_to_euler, quat_to_matrix

POSITION = ("Xposition", "Yposition", "Zposition")
ROTATION = ("Xrotation", "Yrotation", "Zrotation")
SCALE = ("Xscale", "Yscale", "Zscale")
_CANONICAL = {c.lower(): c for c in POSITION + ROTATION + SCALE}
# Unambiguous (one way to split digits between the parts), so a long run of digits followed by
# junk fails in linear time instead of backtracking quadratically.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)

# Limits (why each is where it is: docs/bvh.md, "Limits").
MAX_FILE_BYTES = 512 * 2**20  # reading holds about 5 bytes of memory per byte of file
MAX_JOINTS = 4_096  # mocap rigs have tens of joints, with fingers and a face a few hundred
MAX_DEPTH = 1_000  # real chains are under 50 deep; a long rope or tail a few hundred
MAX_CHANNELS_PER_JOINT = 9  # the format's own limit (3 positions, 3 rotations, 3 scales)
MAX_FRAMES = 2_000_000  # 4.6 hours at 120 fps
MAX_ABS = 1e9  # largest magnitude of any number: sums over MAX_DEPTH joints stay far from overflow
MAX_POSE_BYTES = 512 * 2**20  # one frames x joints result: 22 million joint-frames of positions
CHUNK_BYTES = 128 * 2**20  # working memory of forward kinematics per chunk of frames
MESSAGE_CHARS = 250  # an error line, so that a command's prefix keeps it within about 300
_WORK_BYTES_PER_JOINT_FRAME = 280  # what one joint-frame of forward kinematics holds at once (measured: 262)


class BVHWarning(UserWarning):
    """A damaged but usable BVH file (see the module docstring for the cases)."""


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


@dataclass(frozen=True)
class _Layout:
    """Which data columns feed which joint, and the joints by depth: worked out once per motion,
    so every chunk of frames is a handful of vectorised gathers."""
    pos_joints: np.ndarray  # (k,) joints with any position channel
    pos_cols: np.ndarray  # (k, 3) their X/Y/Z position columns, -1 where the axis is not written
    rot_groups: tuple  # (order "ZXY", joints (k,), columns (k, n)) per distinct rotation order
    scale_joints: np.ndarray
    scale_cols: np.ndarray  # like pos_cols; -1 is a scale of 1
    levels: tuple  # (joints, parents) per depth; the first holds the roots (parents None)


@dataclass(frozen=True)
class Motion:
    joint_names: tuple[str, ...]
    parents: np.ndarray  # (J,) int, -1 for a root; parents come before children
    offsets: np.ndarray  # (J, 3) rest head relative to the parent's head (file units)
    channels: tuple[tuple[str, ...], ...]  # per joint, canonical names in written order
    frame_time: float  # seconds
    data: np.ndarray  # (F, C) channel values in file order (file units, degrees)
    end_sites: np.ndarray = field(default=None)  # (J, 3) End Site offset, NaN where none
    source: str = field(default="motion", compare=False)  # the file, for messages

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

    @functools.cached_property
    def _index_of(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j, n in enumerate(self.joint_names):
            out.setdefault(n, j)  # the first, as tuple.index would give
        return out

    def index(self, name: str) -> int:
        j = self._index_of.get(name)
        if j is None:
            raise DualPMError(f"{clip(self.source, 100, tail=True)} has no joint named {clip(repr(name), 60)}")
        return j

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
        children: list[list[int]] = [[] for _ in range(self.num_joints)]
        for j, p in enumerate(self.parents):
            if p >= 0:
                children[p].append(j)
        for j, kids in enumerate(children):
            if not np.isnan(self.end_sites[j, 0]):
                tails[j] = heads[j] + self.end_sites[j]
            elif kids:
                tails[j] = heads[kids].mean(axis=0)
        return tails

    # -- memory ------------------------------------------------------------------------------
    def check_pose_memory(self, bytes_per_joint_frame: int = 24, what: str = "world positions") -> None:
        """Refuse (one-line DualPMError) a frames x joints result over MAX_POSE_BYTES, before any
        of it is allocated. Callers that will need several such arrays can ask up front."""
        need = self.num_frames * self.num_joints * bytes_per_joint_frame
        if need > MAX_POSE_BYTES:
            raise DualPMError(
                f"{clip(self.source, 100, tail=True)}: {what} of {self.num_frames:,} frames x {self.num_joints:,} "
                f"joints need {_size(need)}, more than the limit of {_size(MAX_POSE_BYTES)}; use fewer frames")

    def _frame_chunks(self):
        step = max(1, CHUNK_BYTES // (self.num_joints * _WORK_BYTES_PER_JOINT_FRAME))
        for start in range(0, self.num_frames, step):
            yield start, min(self.num_frames, start + step)

    def _fill(self, tail: tuple[int, ...], what: str, per_chunk) -> np.ndarray:
        """(F, J, *tail) filled chunk by chunk of frames from per_chunk(data rows) (frame-first); per_chunk also gets the first frame's index."""
        self.check_pose_memory(8 * math.prod(tail), what)
        out = np.empty((self.num_frames, self.num_joints) + tail)
        for s, e in self._frame_chunks():
            out[s:e] = per_chunk(self.data[s:e], s)
        return out

    # -- channels to local transforms --------------------------------------------------------
    @functools.cached_property
    def _layout(self) -> _Layout:
        cols = self.channel_columns()
        pos = [j for j, c in enumerate(cols) if any(p in c for p in POSITION)]
        scl = [j for j, c in enumerate(cols) if any(s in c for s in SCALE)]
        groups: dict[str, tuple[list[int], list[list[int]]]] = {}
        for j, c in enumerate(cols):
            order = "".join(n[0] for n in self.channels[j] if n in ROTATION)
            if order:
                g = groups.setdefault(order, ([], []))
                g[0].append(j)
                g[1].append([c[a + "rotation"] for a in order])
        depth = np.zeros(self.num_joints, dtype=np.int64)
        parents = np.asarray(self.parents, dtype=np.int64)
        for j, p in enumerate(parents):  # parents first: one pass
            if p >= 0:
                depth[j] = depth[p] + 1
        order = np.argsort(depth, kind="stable")
        bounds = np.flatnonzero(np.diff(depth[order])) + 1
        levels = []
        for k, joints in enumerate(np.split(order, bounds)):
            levels.append((joints, None if k == 0 else parents[joints]))

        def table(joints, names):
            return np.array([[cols[j].get(n, -1) for n in names] for j in joints], dtype=np.int64).reshape(-1, 3)

        return _Layout(np.array(pos, dtype=np.int64), table(pos, POSITION),
                       tuple((o, np.array(js), np.array(cs)) for o, (js, cs) in groups.items()),
                       np.array(scl, dtype=np.int64), table(scl, SCALE), tuple(levels))

    def _translations_soa(self, d: np.ndarray) -> np.ndarray:
        """(3, J, f) local translations of the frames in `d`: OFFSET, or the position channels."""
        lay = self._layout
        out = np.empty((3, self.num_joints, d.shape[0]))
        out[:] = np.asarray(self.offsets, dtype=np.float64).T[:, :, None]
        if len(lay.pos_joints):
            vals = np.where(lay.pos_cols >= 0, d[:, np.maximum(lay.pos_cols, 0)], 0.0)  # (f, k, 3)
            out[:, lay.pos_joints] = vals.transpose(2, 1, 0)
        return out

    def _scales(self, d: np.ndarray) -> np.ndarray:
        """(f, J, 3) scale factors of the frames in `d` (1 where none)."""
        lay = self._layout
        out = np.ones((d.shape[0], self.num_joints, 3))
        if len(lay.scale_joints):
            out[:, lay.scale_joints] = np.where(lay.scale_cols >= 0, d[:, np.maximum(lay.scale_cols, 0)], 1.0)
        return out

    def _quaternions_soa(self, d: np.ndarray) -> np.ndarray:
        """(4, J, f): w, x, y, z of every joint's local rotation, each a contiguous run of frames.

        Built from half-angle quaternions multiplied in the written order: elementwise work only,
        one batch per distinct channel order.
        """
        out = np.zeros((4, self.num_joints, d.shape[0]))
        out[0] = 1.0
        for order, joints, idx in self._layout.rot_groups:
            half = np.ascontiguousarray(np.radians(d[:, idx]).transpose(2, 1, 0)) * 0.5  # (n, k, f)
            cos, sin = np.cos(half), np.sin(half)
            q = None
            for a, axis in enumerate(order):
                qa = np.zeros((4,) + half.shape[1:])
                qa[0] = cos[a]
                qa[1 + "XYZ".index(axis)] = sin[a]
                q = qa if q is None else _qmul(q, qa)
            out[:, joints] = q
        return out

    def local_translations(self) -> np.ndarray:
        """(F, J, 3): OFFSET, or the position channels where a joint has any."""
        return self._fill((3,), "local translations", lambda d, s: self._translations_soa(d).transpose(2, 1, 0))

    def local_quaternions(self) -> np.ndarray:
        """(F, J, 4) local rotations (w, x, y, z) from the rotation channels (identity where none)."""
        return self._fill((4,), "local rotations", lambda d, s: self._quaternions_soa(d).transpose(2, 1, 0))

    def local_rotations(self) -> np.ndarray:
        """(F, J, 3, 3) local rotation matrices from the rotation channels."""
        return self._fill((3, 3), "local rotation matrices",
                          lambda d, s: quat_to_matrix(self._quaternions_soa(d).transpose(2, 1, 0)))

    def local_scales(self) -> np.ndarray | None:
        """(F, J, 3) scale factors, or None when the file has no scale channels."""
        if not len(self._layout.scale_joints):
            return None
        return self._fill((3,), "local scales", lambda d, s: self._scales(d))

    # -- forward kinematics ------------------------------------------------------------------
    def _world_soa(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (4, J, f) and heads (3, J, f) of the frames in `d`, ignoring scales.
        One step per depth (every joint of a depth at once), each elementwise over contiguous runs
        of frames: no Python loop over joints."""
        ql = self._quaternions_soa(d)
        tl = self._translations_soa(d)
        qw = np.empty_like(ql)
        pw = np.empty_like(tl)
        for joints, pars in self._layout.levels:
            if pars is None:
                qw[:, joints], pw[:, joints] = ql[:, joints], tl[:, joints]
            else:
                qp = qw[:, pars]
                qw[:, joints] = _qmul(qp, ql[:, joints])
                pw[:, joints] = pw[:, pars] + _qrot(qp, tl[:, joints])
        return qw, pw

    def _world_scaled(self, d: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """World linear parts (f, J, 3, 3) and heads (f, J, 3) with scale channels: matrices, one
        batched product per depth. Scales multiply down a chain, so overflow is an error here."""
        lin_l = quat_to_matrix(self._quaternions_soa(d).transpose(2, 1, 0)) * self._scales(d)[:, :, None, :]
        trans = self._translations_soa(d).transpose(2, 1, 0)
        lin = np.empty_like(lin_l)
        pos = np.empty_like(trans)
        with np.errstate(over="ignore", invalid="ignore"):
            for joints, pars in self._layout.levels:
                if pars is None:
                    lin[:, joints], pos[:, joints] = lin_l[:, joints], trans[:, joints]
                else:
                    lp = lin[:, pars]
                    lin[:, joints] = lp @ lin_l[:, joints]
                    pos[:, joints] = pos[:, pars] + np.einsum("fkab,fkb->fka", lp, trans[:, joints])
        bad = ~(np.isfinite(pos).all(axis=(1, 2)) & np.isfinite(lin).all(axis=(1, 2, 3)))
        if bad.any():
            raise DualPMError(f"{clip(self.source, 100, tail=True)}: frame {start + int(np.argmax(bad))}: "
                              f"scale channels multiply past the range of floating point")
        return lin, pos

    def world_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """World linear parts (F, J, 3, 3) (rotation, times scale where scaled) and heads (F, J, 3)."""
        self.check_pose_memory(96, "world transforms")
        lin = np.empty((self.num_frames, self.num_joints, 3, 3))
        pos = np.empty((self.num_frames, self.num_joints, 3))
        scaled = len(self._layout.scale_joints) > 0
        for s, e in self._frame_chunks():
            if scaled:
                lin[s:e], pos[s:e] = self._world_scaled(self.data[s:e], s)
            else:
                qw, pw = self._world_soa(self.data[s:e])
                lin[s:e], pos[s:e] = quat_to_matrix(qw.transpose(2, 1, 0)), pw.transpose(2, 1, 0)
        return lin, pos

    def world_quaternions(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (F, J, 4) and heads (F, J, 3), ignoring scale channels.

        Because BVH rest frames are world-aligned, a world rotation is also the joint's rotation
        away from its rest orientation (what retargeting carries).
        """
        self.check_pose_memory(56, "world rotations and positions")
        q = np.empty((self.num_frames, self.num_joints, 4))
        p = np.empty((self.num_frames, self.num_joints, 3))
        for s, e in self._frame_chunks():
            qw, pw = self._world_soa(self.data[s:e])
            q[s:e], p[s:e] = qw.transpose(2, 1, 0), pw.transpose(2, 1, 0)
        return q, p

    def world_positions(self) -> np.ndarray:
        """(F, J, 3) joint heads in the file's units and axes. The result is at most
        MAX_POSE_BYTES (else a DualPMError); the work runs in chunks of frames."""
        if len(self._layout.scale_joints):
            return self._fill((3,), "world positions", lambda d, s: self._world_scaled(d, s)[1])
        return self._fill((3,), "world positions", lambda d, s: self._world_soa(d)[1].transpose(2, 1, 0))

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
                      data, self.end_sites * factor, self.source)

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
            raise DualPMError(f"joint name {clip(repr(name), 60)} is already used")
        parents = np.concatenate([[-1], np.where(self.parents < 0, 0, self.parents + 1)])
        return Motion((name,) + self.joint_names, parents, np.vstack([np.zeros(3), self.offsets]),
                      ((),) + self.channels, self.frame_time, self.data,
                      np.vstack([np.full(3, np.nan), self.end_sites]), self.source)

    def renamed(self, names) -> "Motion":
        names = tuple(str(n) for n in names)
        if len(names) != self.num_joints or len(set(names)) != len(names):
            raise DualPMError("renamed motion needs one distinct name per joint")
        return Motion(names, self.parents, self.offsets, self.channels, self.frame_time, self.data, self.end_sites,
                      self.source)

    def frames(self, start: int, stop: int | None = None) -> "Motion":
        return Motion(self.joint_names, self.parents, self.offsets, self.channels, self.frame_time,
                      self.data[start:stop], self.end_sites, self.source)


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


def _show(text: str, n: int = 40) -> str:
    """A token or line quoted for a message: at most about n characters, cut with an ellipsis."""
    return clip(repr(clip(text, n)), n + 12)


def _error(source: str, line: int | None, reason: str) -> DualPMError:
    where = clip(source, 100, tail=True)
    where = f"{where}: line {line}" if line else where
    return DualPMError(clip(f"{where}: {reason}", MESSAGE_CHARS))


def _magnitude(v: float) -> str:
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


def _number(tok: str, source: str, line: int, what: str) -> float:
    if not _NUMBER.match(tok):
        raise _error(source, line, f"{what}: {_show(tok)} is not a number")
    v = float(tok)
    if not math.isfinite(v):
        raise _error(source, line, f"{what}: {_show(tok)} is not finite")
    if abs(v) > MAX_ABS:
        raise _error(source, line, f"{what}: {_show(tok)} is larger than the limit of {_magnitude(MAX_ABS)}")
    return v


def _count(tok: str, limit: int) -> int | None:
    """A non-negative decimal integer token, or None when it is not one; a value over `limit` is
    limit + 1. Never int() on thousands of digits (Python refuses those with a ValueError)."""
    if not (tok.isascii() and tok.isdigit()):
        return None
    digits = tok.lstrip("0") or "0"
    return limit + 1 if len(digits) > len(str(limit)) else min(int(digits), limit + 1)


def read(path, *, strict: bool = False) -> Motion:
    """Read a BVH file; every failure is a one-line DualPMError naming the file and the line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise _error(path, None, f"{_size(size)} is more than the limit of {_size(MAX_FILE_BYTES)} for a BVH file")
            raw = f.read()  # _text() checks the length again, should the file have grown
    except OSError as e:
        raise _error(path, None, f"cannot read BVH file ({e.strerror or e})") from None
    text = _text(raw, path)
    del raw  # a large file's bytes need not live beside its text
    return _parse_text(text, path, strict)


def parse(text, *, source: str = "BVH", strict: bool = False) -> Motion:
    """Parse BVH text (str or bytes)."""
    return _parse_text(_text(text, source), source, strict)


def _text(text, source: str) -> str:
    """Checked, decoded text with '\n' line ends."""
    if len(text) > MAX_FILE_BYTES:
        raise _error(source, None, f"{_size(len(text))} is more than the limit of {_size(MAX_FILE_BYTES)} for a BVH file")
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
    return text


def _parse_text(text: str, source: str, strict: bool) -> Motion:
    toks = _Tokens(text)
    names, parents, offsets, channels, end_sites = _parse_hierarchy(toks, source)
    if toks.motion is None:
        raise _error(source, text.rstrip().count("\n") + 1, "no MOTION section after the hierarchy")
    motion_line, end = toks.motion
    num_channels = sum(len(c) for c in channels)
    frame_time, data = _parse_motion(text, end, motion_line, num_channels, source, strict)
    return Motion(tuple(names), np.array(parents, dtype=np.int64), np.array(offsets, dtype=np.float64).reshape(-1, 3),
                  tuple(channels), frame_time, data, np.array(end_sites, dtype=np.float64).reshape(-1, 3), source)


def _lines(text: str):
    """(line number, line, offset of its end) without splitting the whole text into a list."""
    start, n = 0, 1
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield n, text[start:], len(text)
            return
        yield n, text[start:end], end
        start, n = end + 1, n + 1


class _Tokens:
    """The hierarchy's (token, line number) pairs, read lazily with a few tokens of lookahead, up
    to the MOTION line; braces are tokens of their own even when glued to a word. Lazy, so a file
    with a million joints is refused at the first joint over the limit for the cost of reading that
    far, never a list of all its tokens or a scan of the rest for MOTION."""

    def __init__(self, text: str):
        self._source = self._generate(text)
        self._ahead: deque = deque()
        self.line = 1  # of the last token taken
        self.motion: tuple[int, int] | None = None  # MOTION's line number and where that line ends

    def _generate(self, text: str):
        for n, line, end in _lines(text):
            word = line.strip(" \t\f\v")
            if len(word) == 6 and word.upper() == "MOTION":
                self.motion = (n, end)
                return
            if "{" in line or "}" in line:
                line = line.replace("{", " { ").replace("}", " } ")
            for tok in line.split():
                yield tok, n

    def peek(self, k: int = 0):
        while len(self._ahead) <= k:
            nxt = next(self._source, None)
            if nxt is None:
                return None
            self._ahead.append(nxt)
        return self._ahead[k]

    def take(self):
        t = self.peek()
        if t is not None:
            self._ahead.popleft()
            self.line = t[1]
        return t

    def take_on_line(self, line: int) -> list[str]:
        """The tokens left on `line` before a '{' (a name of several words)."""
        words = []
        while (t := self.peek()) is not None and t[1] == line and t[0] != "{":
            words.append(self.take()[0])
        return words


def _parse_hierarchy(toks: _Tokens, source: str):
    first = toks.take()
    if first is None or first[0].upper() != "HIERARCHY":
        raise _error(source, first[1] if first else 1, "not a BVH file (it does not start with HIERARCHY)")
    names: list[str] = []
    used: set[str] = set()
    next_suffix: dict[str, int] = {}  # where the search for a free `.NNN` resumes, per name
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[list[float]] = []
    has_offset: list[bool] = []
    stack: list[int] = []  # open joints
    opened: list[int] = []

    def take(k: int, what: str, line: int) -> list[tuple[str, int]]:
        out = [toks.take() for _ in range(k)]
        if out and out[-1] is None:
            raise _error(source, line, f"file ends inside {what}")
        return out

    while (t := toks.take()) is not None:
        tok, line = t
        key = tok.upper()
        if key in ("ROOT", "JOINT"):
            if key == "JOINT" and not stack:
                raise _error(source, line, "JOINT outside any ROOT")
            if key == "ROOT" and stack:
                raise _error(source, line, "ROOT inside another joint")
            words = toks.take_on_line(line)
            if not words:
                raise _error(source, line, f"{key} without a name")
            name = "_".join(words)
            if name in used:  # Blender's rule for duplicate names: the first free .001, .002, ...
                k = next_suffix.get(name, 1)
                while f"{name}.{k:03d}" in used:
                    k += 1
                next_suffix[name] = k + 1
                name = f"{name}.{k:03d}"
            brace = toks.take()
            if brace is None or brace[0] != "{":
                raise _error(source, brace[1] if brace else line, f"expected '{{' after {key} {clip(name, 60)}")
            if len(names) >= MAX_JOINTS:
                raise _error(source, line, f"more than the limit of {MAX_JOINTS:,} joints")
            if len(stack) >= MAX_DEPTH:
                raise _error(source, line, f"joints nested more than the limit of {MAX_DEPTH:,} deep")
            used.add(name)
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            end_sites.append([math.nan] * 3)
            has_offset.append(False)
            stack.append(len(names) - 1)
            opened.append(line)
        elif key == "END":
            if not stack:
                raise _error(source, line, "End Site outside a joint")
            site = toks.take()
            if site is None or site[0].upper() != "SITE":
                raise _error(source, line, "expected 'End Site'")
            toks.take_on_line(line)  # some files name their End Sites; the name is not used
            brace = toks.take()
            if brace is None or brace[0] != "{":
                raise _error(source, line, "expected '{' after End Site")
            if not math.isnan(end_sites[stack[-1]][0]):
                raise _error(source, line, f"joint {clip(names[stack[-1]], 60)} has a second End Site")
            head = take(4, "an End Site", line)
            if head[0][0].upper() != "OFFSET":
                raise _error(source, head[0][1], f"expected OFFSET in End Site, found {_show(head[0][0])}")
            end_sites[stack[-1]] = [_number(t, source, ln, "End Site OFFSET") for t, ln in head[1:]]
            close = toks.take()
            if close is None or close[0] != "}":
                raise _error(source, close[1] if close else line, "expected '}' to close the End Site")
        elif key == "OFFSET":
            if not stack:
                raise _error(source, line, "OFFSET outside a joint")
            j = stack[-1]
            if has_offset[j]:
                raise _error(source, line, f"joint {clip(names[j], 60)} has a second OFFSET")
            offsets[j] = [_number(t, source, ln, "OFFSET") for t, ln in take(3, "an OFFSET", line)]
            has_offset[j] = True
        elif key == "CHANNELS":
            if not stack:
                raise _error(source, line, "CHANNELS outside a joint")
            j = stack[-1]
            if channels[j]:
                raise _error(source, line, f"joint {clip(names[j], 60)} has a second CHANNELS line")
            count_tok = take(1, "a CHANNELS line", line)[0][0]
            k = _count(count_tok, MAX_CHANNELS_PER_JOINT)
            if k is None or k > MAX_CHANNELS_PER_JOINT:
                raise _error(source, line, f"CHANNELS count {_show(count_tok)} is not a number from 0 to "
                                           f"{MAX_CHANNELS_PER_JOINT}")
            chans = []
            for t, ln in take(k, "a CHANNELS line", line):
                c = _CANONICAL.get(t.lower())
                if c is None:
                    raise _error(source, ln, f"unknown channel {_show(t)}")
                if c in chans:
                    raise _error(source, ln, f"channel {c} repeated")
                chans.append(c)
            channels[j] = tuple(chans)
        elif tok == "}":
            if not stack:
                raise _error(source, line, "'}' without an open joint")
            j = stack.pop()
            opened.pop()
            if not has_offset[j]:
                raise _error(source, line, f"joint {clip(names[j], 60)} has no OFFSET")
        elif tok == "{":
            raise _error(source, line, "unexpected '{'")
        else:
            raise _error(source, line, f"unexpected {_show(tok)} in HIERARCHY")
    if stack:
        raise _error(source, opened[-1], f"joint {clip(names[stack[-1]], 60)} is never closed")
    if not names:
        raise _error(source, toks.line, "HIERARCHY has no joints")
    return names, parents, offsets, channels, end_sites


def _header_value(line: str, labels: tuple[str, ...]) -> str | None:
    """The value after a 'Frames:' / 'Frame Time:' label, tolerant of spacing around the colon."""
    # At most 6 words are split off: a long junk line costs one pass, not a list of its words.
    words = line.replace(":", " : ").strip().split(None, 5)
    lab = [w.lower() for w in words]
    for label in labels:
        want = label.lower().replace(":", " : ").split()
        if lab[: len(want)] == want and len(words) == len(want) + 1:
            return words[-1]
    return None


def _parse_motion(text: str, start: int, first_line: int, num_channels: int, source: str, strict: bool):
    # text[start] ends the MOTION line (file line first_line); header lines follow, blank lines
    # allowed. Walked line by line: the rows are never split into a list, and copied once.
    header = []
    pos, k = (None if start >= len(text) else start + 1), 1  # pos: where file line first_line + k starts
    while pos is not None and len(header) < 2:
        end = text.find("\n", pos)
        line = text[pos:] if end < 0 else text[pos:end]
        if line.strip():
            header.append((line, first_line + k))
        pos, k = (None if end < 0 else end + 1), k + 1
    if len(header) < 1:
        raise _error(source, first_line, "MOTION without a 'Frames:' line")
    frames_tok = _header_value(header[0][0], ("Frames:",))
    declared = None if frames_tok is None else _count(frames_tok, MAX_FRAMES)
    if declared is None:
        raise _error(source, header[0][1], f"expected 'Frames: N', found {_show(header[0][0].strip(), 60)}")
    if declared > MAX_FRAMES:
        raise _error(source, header[0][1], f"Frames: {clip(frames_tok, 20)} is more than the limit of {MAX_FRAMES:,}")
    if len(header) < 2:
        raise _error(source, header[0][1], "MOTION without a 'Frame Time:' line")
    ft_tok = _header_value(header[1][0], ("Frame Time:", "FrameTime:"))
    if ft_tok is None:
        raise _error(source, header[1][1], f"expected 'Frame Time: T', found {_show(header[1][0].strip(), 60)}")
    frame_time = _number(ft_tok, source, header[1][1], "Frame Time")
    if frame_time <= 0:
        raise _error(source, header[1][1], f"Frame Time {_show(ft_tok)} is not positive")
    body_line = first_line + k  # file line number where the body starts
    body = "" if pos is None else text[pos:]
    if num_channels == 0:
        # Nothing to read: every frame is the rest pose (a hierarchy-only file or dummy rig).
        extra = re.search(r"\S", body)
        if extra:
            raise _error(source, body_line + body.count("\n", 0, extra.start()), "motion values, but no joint has channels")
        return frame_time, np.zeros((declared, 0))
    data = _parse_rows(body, body_line, num_channels, source, strict)
    got = data.shape[0]
    if got != declared:
        msg = f"the header says {declared} frames but the file has {got}"
        if strict or got == 0:
            raise _error(source, header[0][1], msg)
        warnings.warn(f"{clip(source, 100, tail=True)}: line {header[0][1]}: {msg}; reading {got}", BVHWarning,
                      stacklevel=4)
    return frame_time, data


_COUNT_BLOCK = 8 * 2**20  # bytes of rows whose tokens are counted at once


def _row_token_counts(body: str) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-separated tokens on each line, and each line's start offset, without splitting.

    Byte arithmetic: a token starts where a non-blank follows a blank. Done over blocks of whole
    lines, so the temporary arrays stay a few times _COUNT_BLOCK whatever the file's size.
    """
    if body.isascii():
        b = np.frombuffer(body.encode("ascii"), dtype=np.uint8)
        starts = np.concatenate([[0], np.flatnonzero(b == 10) + 1])
        counts = np.empty(len(starts), dtype=np.int64)
        first = np.searchsorted(starts, np.arange(0, len(b) + 1, _COUNT_BLOCK), side="right") - 1
        cuts = np.unique(np.append(first, len(starts)))
        for l0, l1 in zip(cuts[:-1], cuts[1:]):
            lo, hi = starts[l0], (starts[l1] if l1 < len(starts) else len(b))
            blk = b[lo:hi]
            blank = blk <= 32
            tok = ~blank
            tok[1:] &= blank[:-1]  # the block starts a line, so its first byte follows a blank
            # Tokens before each line start, by binary search in the token positions.
            before = np.searchsorted(np.flatnonzero(tok), np.append(starts[l0:l1] - lo, hi - lo))
            counts[l0:l1] = np.diff(before)
        return counts, starts
    counts = np.fromiter((len(r.split()) for _, r, _ in _lines(body)), dtype=np.int64)
    lengths = np.fromiter((len(r) + 1 for _, r, _ in _lines(body)), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
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
        warnings.warn(f"{clip(source, 100, tail=True)}: line {body_line + i}: motion cut short ({counts[i]} of "
                      f"{num_channels} values); the incomplete last frame is dropped", BVHWarning, stacklevel=5)
        end = int(starts[i])
        rows -= 1
    if rows > MAX_FRAMES:
        raise _error(source, body_line + int(nonempty[MAX_FRAMES]), f"more than the limit of {MAX_FRAMES:,} frames")
    if rows == 0:
        return np.zeros((0, num_channels))
    block = body[:end]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # numpy warns when it stops before the end: a bad value
        values = np.fromstring(block, dtype=np.float64, sep=" ")
    with np.errstate(invalid="ignore"):
        in_range = values.size == rows * num_channels and bool(np.all(np.abs(values) <= MAX_ABS))
    if caught or not in_range:
        _locate_bad_value(block, body_line, source)
        # Every token is a plain number, yet numpy read them differently (exotic whitespace).
        values = np.array(block.split(), dtype=np.float64)
    return values.reshape(rows, num_channels)


def _locate_bad_value(block: str, body_line: int, source: str):
    for n, row, _ in _lines(block):
        for tok in row.split():
            _number(tok, source, body_line + n - 1, "motion")


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
            raise DualPMError(f"joint name {clip(repr(name), 60)} cannot be written to BVH (empty, spaces or braces)")
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
