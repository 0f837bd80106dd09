"""A baked, rigged animal: rest mesh, deform skeleton, skin weights, clips and canonical points.

One `.npz` file per species, written by `training/bake.py` from Blender's own glTF import and read
here with `allow_pickle=False`. All positions are metres in Blender's world frame (Z up, the
animal faces -Y, its left is +X). `canonical_vertices` are the same vertices carried into the
shared canonical space Q (see `canonical.py`); for the reference species they equal `vertices`.

Clips are stored concatenated: clip c covers rows clip_starts[c]:clip_starts[c+1] of
`clip_rotations` (N, J, 4) local quaternions, `clip_root_translation` (N, 3) root-head offsets in
model space and `clip_offsets` (N, J, 3) local head offsets (zero except for bones that were IK
controllers in the source rig; see skeleton.py).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import DualPMError
from .npz import write_npz
from .skeleton import Skeleton
from .skinning import linear_blend_skinning

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Clip:
    name: str
    fps: float
    rotations: np.ndarray  # (F, J, 4)
    root_translation: np.ndarray  # (F, 3)
    offsets: np.ndarray  # (F, J, 3)

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])


@dataclass(frozen=True)
class Template:
    species: str
    skeleton: Skeleton
    vertices: np.ndarray  # (V, 3) rest mesh
    faces: np.ndarray  # (F, 3) int
    face_material: np.ndarray  # (F,) index into material_colors
    material_names: tuple[str, ...]
    material_colors: np.ndarray  # (M, 3) linear RGB base colours
    skin_joints: np.ndarray  # (V, 4) int
    skin_weights: np.ndarray  # (V, 4) rows sum to 1
    canonical_vertices: np.ndarray  # (V, 3) Q of each vertex
    clip_names: tuple[str, ...] = ()
    clip_fps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clip_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    clip_rotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 4)))
    clip_root_translation: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    clip_offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3)))

    # -- clips -----------------------------------------------------------------------------------
    def clip(self, name: str) -> Clip:
        if name not in self.clip_names:
            raise DualPMError(f"{self.species} has no clip {name!r}; it has {', '.join(self.clip_names)}")
        c = self.clip_names.index(name)
        a, b = int(self.clip_starts[c]), int(self.clip_starts[c + 1])
        return Clip(name, float(self.clip_fps[c]), self.clip_rotations[a:b].astype(np.float64),
                    self.clip_root_translation[a:b].astype(np.float64),
                    self.clip_offsets[a:b].astype(np.float64))

    @property
    def clips(self) -> list[Clip]:
        return [self.clip(n) for n in self.clip_names]

    # -- geometry --------------------------------------------------------------------------------
    @property
    def body_length(self) -> float:
        """Extent of the rest mesh along the facing axis (Y), nose to tail tip, in metres."""
        return float(np.ptp(self.vertices[:, 1]))

    def pose_vertices(self, rotations: np.ndarray, root_translation: np.ndarray | None = None,
                      offsets: np.ndarray | None = None) -> np.ndarray:
        """Skinned vertices (..., V, 3) for local rotations (..., J, 4)."""
        g = self.skeleton.forward_kinematics(rotations, root_translation, offsets=offsets)
        return linear_blend_skinning(self.vertices, self.skin_joints, self.skin_weights,
                                     self.skeleton.skinning_matrices(g))

    # -- io --------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
            "species": np.array(self.species, dtype=np.str_),
            "vertices": np.asarray(self.vertices, dtype=np.float32),
            "faces": np.asarray(self.faces, dtype=np.int32),
            "face_material": np.asarray(self.face_material, dtype=np.int16),
            "material_names": np.array(self.material_names, dtype=np.str_),
            "material_colors": np.asarray(self.material_colors, dtype=np.float32),
            "skin_joints": np.asarray(self.skin_joints, dtype=np.int16),
            "skin_weights": np.asarray(self.skin_weights, dtype=np.float32),
            "canonical_vertices": np.asarray(self.canonical_vertices, dtype=np.float32),
            "clip_names": np.array(self.clip_names, dtype=np.str_),
            "clip_fps": np.asarray(self.clip_fps, dtype=np.float32),
            "clip_starts": np.asarray(self.clip_starts, dtype=np.int32),
            "clip_rotations": np.asarray(self.clip_rotations, dtype=np.float32),
            "clip_root_translation": np.asarray(self.clip_root_translation, dtype=np.float32),
            "clip_offsets": np.asarray(self.clip_offsets, dtype=np.float32),
        }
        out.update(self.skeleton.to_arrays())
        return out

    def save(self, path: str) -> None:
        """Write atomically: a crash never leaves a half-written template under the final name."""
        write_npz(path, self.to_arrays())

    @classmethod
    def from_arrays(cls, a, source: str = "template") -> "Template":
        try:
            version = int(a["format_version"])
            if version != FORMAT_VERSION:
                raise DualPMError(f"{source}: template format {version}, this version reads {FORMAT_VERSION}")
            skin_weights = np.asarray(a["skin_weights"], dtype=np.float64)
            return cls(
                species=str(a["species"]),
                skeleton=Skeleton.from_arrays(a),
                vertices=np.asarray(a["vertices"], dtype=np.float64),
                faces=np.asarray(a["faces"], dtype=np.int64),
                face_material=np.asarray(a["face_material"], dtype=np.int64),
                material_names=tuple(str(n) for n in a["material_names"]),
                material_colors=np.asarray(a["material_colors"], dtype=np.float64),
                skin_joints=np.asarray(a["skin_joints"], dtype=np.int64),
                skin_weights=skin_weights / skin_weights.sum(axis=1, keepdims=True),
                canonical_vertices=np.asarray(a["canonical_vertices"], dtype=np.float64),
                clip_names=tuple(str(n) for n in a["clip_names"]),
                clip_fps=np.asarray(a["clip_fps"], dtype=np.float64),
                clip_starts=np.asarray(a["clip_starts"], dtype=np.int64),
                clip_rotations=np.asarray(a["clip_rotations"], dtype=np.float32),
                clip_root_translation=np.asarray(a["clip_root_translation"], dtype=np.float32),
                clip_offsets=np.asarray(a["clip_offsets"], dtype=np.float32),
            )
        except KeyError as e:
            raise DualPMError(f"{source}: not a baked template (missing {e.args[0]!r})") from None


def load(path: str) -> Template:
    """Read a baked template; every failure is a one-line DualPMError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such template file")
    try:
        with np.load(path, allow_pickle=False) as a:
            return Template.from_arrays({k: a[k] for k in a.files}, source=path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DualPMError(f"{path}: not a readable template ({e})") from None


def assets_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


def default_template_path() -> str:
    return os.path.join(assets_dir(), "template_horse.npz")


def load_default() -> Template:
    return load(default_template_path())
