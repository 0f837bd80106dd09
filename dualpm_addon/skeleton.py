"""A deform skeleton and its forward kinematics.

Conventions (the same as Blender's pose evaluation, so baked clips reproduce Blender exactly):

* Every bone j has a rest frame B_j: a rigid 4x4 transform whose rotation columns are the bone's
  axes (Y runs from head to tail) and whose translation is the bone's head, in model space.
* A pose gives each bone a local rotation q_j (unit quaternion, w x y z) about its own head, in
  its own rest frame, and the root a translation t of its head in model space. Optionally a bone
  also moves its head by a local offset o_j (in its own rest frame): baked source rigs whose feet
  are IK controllers need it to reproduce the source exactly; fitted and retargeted poses leave
  it at zero.
* Posed frames: G_root = T(t) B_root R(q_root); G_j = G_parent (B_parent^-1 B_j) T(o_j) R(q_j).
* Skinning matrices S_j = G_j B_j^-1 carry rest-pose points to posed points.

Parents come before children, so one pass in index order evaluates the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DualPMError
from .rotations import quat_to_matrix


@dataclass(frozen=True)
class Skeleton:
    joint_names: tuple[str, ...]
    parents: np.ndarray  # (J,) int, -1 for the root
    rest_heads: np.ndarray  # (J, 3) model space, metres
    rest_tails: np.ndarray  # (J, 3)
    rest_frames: np.ndarray  # (J, 3, 3) bone axes as columns, model space

    def __post_init__(self):
        j = len(self.joint_names)
        parents = np.asarray(self.parents)
        if parents.shape != (j,):
            raise DualPMError(f"skeleton: parents has shape {parents.shape}, expected ({j},)")
        for a, shape in (("rest_heads", (j, 3)), ("rest_tails", (j, 3)), ("rest_frames", (j, 3, 3))):
            if np.shape(getattr(self, a)) != shape:
                raise DualPMError(f"skeleton: {a} has shape {np.shape(getattr(self, a))}, expected {shape}")
        # Frames stored as float32 drift off orthonormal by ~1e-7; snap them to the nearest
        # rotation so rigid inverses are exact and the rest pose reproduces the rest mesh.
        u, _, vt = np.linalg.svd(np.asarray(self.rest_frames, dtype=np.float64))
        object.__setattr__(self, "rest_frames", u @ vt)
        if j == 0 or parents[0] != -1 or np.any(parents[1:] >= np.arange(1, j)) or np.any(parents[1:] < 0):
            raise DualPMError("skeleton: joint 0 must be the only root and every parent must come before its child")

    # -- structure ---------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise DualPMError(f"skeleton has no joint named {name!r}") from None

    def children(self, j: int) -> list[int]:
        return [int(c) for c in np.nonzero(self.parents == j)[0]]

    def descendants(self, j: int) -> list[int]:
        out, stack = [], self.children(j)
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(self.children(c))
        return sorted(out)

    def chain_to_root(self, j: int) -> list[int]:
        out = [j]
        while self.parents[out[-1]] >= 0:
            out.append(int(self.parents[out[-1]]))
        return out

    @property
    def bone_lengths(self) -> np.ndarray:
        return np.linalg.norm(self.rest_tails - self.rest_heads, axis=1)

    # -- rest transforms ---------------------------------------------------------------------
    @property
    def rest_matrices(self) -> np.ndarray:
        """(J, 4, 4) rigid rest frames B_j."""
        m = np.zeros((self.num_joints, 4, 4))
        m[:, :3, :3] = self.rest_frames
        m[:, :3, 3] = self.rest_heads
        m[:, 3, 3] = 1
        return m

    @property
    def local_rest_matrices(self) -> np.ndarray:
        """(J, 4, 4) B_parent^-1 B_j; for the root, B_root itself."""
        b = self.rest_matrices
        out = b.copy()
        p = self.parents[1:]
        out[1:] = rigid_inverse(b[p]) @ b[1:]
        return out

    # -- posing ------------------------------------------------------------------------------
    def forward_kinematics(self, rotations: np.ndarray, root_translation: np.ndarray | None = None,
                           local_rest: np.ndarray | None = None, offsets: np.ndarray | None = None) -> np.ndarray:
        """Posed bone frames G (..., J, 4, 4) from local rotations (..., J, 4) or (..., J, 3, 3).

        `local_rest` replaces the skeleton's own B_parent^-1 B_j (the fitter passes scaled ones);
        `offsets` (..., J, 3) are the optional local head offsets o_j.
        """
        rotations = np.asarray(rotations, dtype=np.float64)
        if rotations.shape[-1] == 4:
            if rotations.shape[-2] != self.num_joints:
                raise DualPMError(f"pose has {rotations.shape[-2]} joints, skeleton has {self.num_joints}")
            rot = quat_to_matrix(rotations)
        elif rotations.shape[-2:] == (3, 3) and rotations.shape[-3] == self.num_joints:
            rot = rotations
        else:
            raise DualPMError(f"pose rotations have shape {rotations.shape}; expected (..., {self.num_joints}, 4)")
        lead = rot.shape[:-3]
        local = np.zeros(lead + (self.num_joints, 4, 4))
        local[..., :3, :3] = rot
        local[..., 3, 3] = 1
        if offsets is not None:
            local[..., :3, 3] = np.asarray(offsets, dtype=np.float64)
        lr = self.local_rest_matrices if local_rest is None else local_rest
        g = np.empty_like(local)
        root = lr[0] @ local[..., 0, :, :]
        if root_translation is not None:
            root = root.copy()
            root[..., :3, 3] += np.asarray(root_translation, dtype=np.float64)
        g[..., 0, :, :] = root
        for j in range(1, self.num_joints):
            g[..., j, :, :] = g[..., self.parents[j], :, :] @ (lr[j] @ local[..., j, :, :])
        return g

    def skinning_matrices(self, posed: np.ndarray) -> np.ndarray:
        """S_j = G_j B_j^-1, (..., J, 4, 4)."""
        return posed @ rigid_inverse(self.rest_matrices)

    def joint_positions(self, posed: np.ndarray) -> np.ndarray:
        """Posed heads (..., J, 3)."""
        return posed[..., :3, 3]

    def posed_tails(self, posed: np.ndarray) -> np.ndarray:
        """Posed tails (..., J, 3): the tail sits at +length along the bone's own Y axis."""
        return posed[..., :3, 3] + posed[..., :3, 1] * self.bone_lengths[:, None]

    def rest_pose(self, frames: int | None = None) -> np.ndarray:
        shape = (self.num_joints, 4) if frames is None else (frames, self.num_joints, 4)
        q = np.zeros(shape)
        q[..., 0] = 1
        return q

    # -- io ------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "joint_names": np.array(self.joint_names, dtype=np.str_),
            "parents": np.asarray(self.parents, dtype=np.int32),
            "rest_heads": np.asarray(self.rest_heads, dtype=np.float64),
            "rest_tails": np.asarray(self.rest_tails, dtype=np.float64),
            "rest_frames": np.asarray(self.rest_frames, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "Skeleton":
        return cls(
            joint_names=tuple(str(n) for n in arrays["joint_names"]),
            parents=np.asarray(arrays["parents"], dtype=np.int64),
            rest_heads=np.asarray(arrays["rest_heads"], dtype=np.float64),
            rest_tails=np.asarray(arrays["rest_tails"], dtype=np.float64),
            rest_frames=np.asarray(arrays["rest_frames"], dtype=np.float64),
        )


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms (..., 4, 4) without a general matrix inverse."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros_like(m)
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out
