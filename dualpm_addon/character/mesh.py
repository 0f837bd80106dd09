"""CharacterMesh: the template made fit to animate and to texture.

`load_character(template)` welds the baked template (split per face for its flat colours),
makes its triangulation exactly mirror-symmetric (the left half's faces mirrored onto the right:
the source model's vertices are symmetric to 1e-6 m but 80 of its quads are split along the
other diagonal on one side), Loop-subdivides it (subdivide.py) carrying rest positions,
canonical positions and skin weights by the same stencil (weights renormalised, top 4), and
gives it the mirrored UV atlas of uv.py. Vertices are split along UV seams; `weld` maps every
vertex to its welded one, so `welded_faces` is the closed manifold topology.

All of it takes ~0.1 s and depends on the template alone, so it is computed at load time and kept
per template object rather than baked into another asset (docs/character.md measures it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import DualPMError
from ..skinning import top_k_weights
from . import subdivide, uv as uv_mod

LEVELS = 1  # Loop steps: 2,182 -> 8,728 faces (docs/character.md: what density serves)
MIRROR_TOLERANCE = 1e-4  # metres: the template's left and right vertices agree to 1e-6


@dataclass(frozen=True)
class CharacterMesh:
    """A skinned, UV-mapped triangle mesh in the animal's rest pose (model space: Blender's
    frame, Z up, facing -Y, its left +X; metres).

    vertices (V, 3) rest positions; faces (F, 3) counter-clockwise seen from outside;
    uv (V, 2) in [0, 1], row v = 0 at the bottom of the image (glTF flips it); the animal's
    left (+X) lies in u < 0.5 and uv[mirror] == (1 - u, v) exactly;
    skin_joints (V, 4) int, skin_weights (V, 4) rows sum to 1; canonical (V, 3) Q of each vertex;
    mirror (V,) the vertex's mirror twin (x -> -x); face_mirror (F,) the face's twin;
    face_material (F,) index into material_colors (M, 3) linear RGB (the template's);
    weld (V,) index of each vertex in the welded, closed manifold mesh (welded_faces);
    chart (F,) UV chart of each face (twins share a chart number; the right side's is + charts).
    levels: Loop steps from the template.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    canonical: np.ndarray
    mirror: np.ndarray
    face_mirror: np.ndarray
    face_material: np.ndarray
    material_colors: np.ndarray
    weld: np.ndarray
    chart: np.ndarray
    levels: int = LEVELS

    @property
    def num_vertices(self) -> int:
        return int(len(self.vertices))

    @property
    def num_welded(self) -> int:
        return int(self.weld.max()) + 1 if len(self.weld) else 0

    @property
    def welded_faces(self) -> np.ndarray:
        """(F, 3) faces over the welded vertices: a closed 2-manifold."""
        return self.weld[self.faces]

    def welded_vertices(self) -> np.ndarray:
        """(W, 3) the rest positions of the welded vertices."""
        out = np.zeros((self.num_welded, 3))
        out[self.weld] = self.vertices
        return out

    def with_vertices(self, vertices: np.ndarray) -> "CharacterMesh":
        """The same mesh with other rest positions (V, 3), e.g. an instance's deformed shape."""
        v = np.asarray(vertices, dtype=np.float64)
        if v.shape != self.vertices.shape:
            raise DualPMError(f"character: vertices have shape {v.shape}, expected {self.vertices.shape}")
        return replace(self, vertices=v)


@dataclass(frozen=True)
class Topology:
    """The welded, symmetric meshes behind a CharacterMesh, for the shape solve (deform.py).

    base_vertices (B, 3), base_faces (Fb, 3): the welded, symmetrised template; base_canonical (B, 3);
    base_mirror (B,); subdivision (W, B) sparse Loop map onto the welded fine mesh;
    fine_faces (F, 3) over the W welded fine vertices (= CharacterMesh.welded_faces);
    fine_mirror (W,).
    """

    base_vertices: np.ndarray
    base_faces: np.ndarray
    base_canonical: np.ndarray
    base_mirror: np.ndarray
    base_skin_joints: np.ndarray
    base_skin_weights: np.ndarray
    subdivision: sp.csr_matrix
    fine_faces: np.ndarray
    fine_mirror: np.ndarray


def mirror_map(points: np.ndarray, tolerance: float = MIRROR_TOLERANCE, source: str = "character") -> np.ndarray:
    """(N,) index of each point's mirror image (x -> -x) among the points."""
    d, j = cKDTree(points).query(points * np.array([-1.0, 1.0, 1.0]))
    if not np.all(d <= tolerance):
        raise DualPMError(f"{source}: not left/right symmetric ({int(np.sum(d > tolerance))} vertices have no "
                          f"mirror twin within {tolerance} m)")
    return j


def _symmetric_base(template):
    """Welded template with the left half's faces mirrored onto the right (exact symmetry)."""
    w, wf, idx = subdivide.weld(template.vertices, template.faces)
    first = np.zeros(len(w), dtype=np.int64)
    first[idx[::-1]] = np.arange(len(idx))[::-1]
    canonical = np.asarray(template.canonical_vertices, dtype=np.float64)[first]
    sj, sw = np.asarray(template.skin_joints)[first], np.asarray(template.skin_weights)[first]
    mirror = mirror_map(w, source=f"template {template.species}")
    x = w[:, 0]
    side = np.where(np.abs(x) <= MIRROR_TOLERANCE, 0, np.sign(x))
    fs = side[wf]
    if np.any((fs.max(axis=1) > 0) & (fs.min(axis=1) < 0)):
        raise DualPMError(f"template {template.species}: faces cross the midline x = 0; cannot mirror its halves")
    left = fs.max(axis=1) > 0
    if np.any(np.all(fs == 0, axis=1)):
        raise DualPMError(f"template {template.species}: faces lie in the midline plane")
    lf = wf[left]
    faces = np.concatenate([lf, mirror[lf][:, ::-1]])
    material = np.concatenate([np.asarray(template.face_material)[left]] * 2)
    flip = np.array([-1.0, 1.0, 1.0])
    # Positions and Q of the right side: exact mirror images of the left's.
    for arr in (w, canonical):
        right = side < 0
        arr[right] = arr[mirror[right]] * flip
        arr[side == 0, 0] = 0.0
    subdivide.check_closed_manifold(faces, f"template {template.species}")
    return w, faces, material, canonical, mirror, sj, sw, int(left.sum())


def _face_mirror(faces: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    key = np.sort(faces, axis=1)
    mkey = np.sort(mirror[faces], axis=1)
    both = np.concatenate([key, mkey])
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.ravel()
    slot = np.full(inv.max() + 1, -1)
    slot[inv[: len(faces)]] = np.arange(len(faces))
    out = slot[inv[len(faces):]]
    if np.any(out < 0):
        raise DualPMError("character: the subdivided mesh lost its mirror symmetry")
    return out


_CACHE: dict = {}


def topology_and_mesh(template, levels: int = LEVELS):
    """(Topology, CharacterMesh) of `template` after `levels` Loop steps, kept per template."""
    key = (id(template), int(levels))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is template:
        return hit[1], hit[2]
    bw, bf, bmat, bcan, bmirror, bsj, bsw, n_left = _symmetric_base(template)
    nj = template.skeleton.num_joints
    s, ff, parent = subdivide.subdivide(bf, len(bw), levels)
    fw, fcan = s @ bw, s @ bcan
    dense = sp.csr_matrix((bsw.ravel().astype(np.float64), (np.repeat(np.arange(len(bw)), bsj.shape[1]),
                                                             bsj.ravel())), shape=(len(bw), nj))
    sj, sw = top_k_weights((s @ dense).toarray(), 4)
    sw = sw.astype(np.float64)
    sw /= sw.sum(axis=1, keepdims=True)
    fmirror = mirror_map(fw, source="character")
    material = bmat[parent]
    fmirror_face = _face_mirror(ff, fmirror)
    is_left = parent < n_left
    # UVs of the left half, then the right half's corners from their twins, mirrored.
    left_faces = np.nonzero(is_left)[0]
    parts = uv_mod.face_parts(template.skeleton, ff[left_faces], sj, sw)
    corner_uv_left, chart_left = uv_mod.layout(fcan, ff[left_faces], parts)
    n_charts = int(chart_left.max()) + 1
    corner_uv = np.zeros((len(ff), 3, 2))
    chart = np.zeros(len(ff), dtype=np.int64)
    corner_uv[left_faces], chart[left_faces] = corner_uv_left, chart_left
    right_faces = np.nonzero(~is_left)[0]
    twin = fmirror_face[right_faces]
    if np.any(~is_left[twin]):
        raise DualPMError("character: a right face's mirror twin is not on the left")
    # Corner j of a right face is the mirror of some corner of its twin: find which.
    mirrored = fmirror[ff[right_faces]]  # (R, 3) twin-side vertex of each right corner
    pos = np.argmax(mirrored[:, :, None] == ff[twin][:, None, :], axis=2)  # (R, 3)
    tw_uv = corner_uv[twin]
    corner_uv[right_faces] = np.take_along_axis(tw_uv, pos[..., None], axis=1) * np.array([-1.0, 1.0]) + [1.0, 0.0]
    chart[right_faces] = chart[twin] + n_charts
    keys = np.stack([ff.ravel(), np.repeat(chart, 3)], axis=1)
    corner_index, first = uv_mod.split_by_corner(keys)
    faces = corner_index.reshape(-1, 3)
    weld = keys[first, 0]
    vchart = keys[first, 1]
    uv = corner_uv.reshape(-1, 2)[first]
    # A split vertex's twin: the twin welded vertex in the twin chart.
    twin_chart = np.where(vchart < n_charts, vchart + n_charts, vchart - n_charts)
    lookup = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(weld, vchart))}
    try:
        vmirror = np.array([lookup[(int(fmirror[a]), int(b))] for a, b in zip(weld, twin_chart)], dtype=np.int64)
    except KeyError:
        raise DualPMError("character: a seam vertex has no mirror twin") from None
    mesh = CharacterMesh(
        vertices=fw[weld], faces=faces, uv=np.clip(uv, 0.0, 1.0), skin_joints=sj[weld].astype(np.int64),
        skin_weights=sw[weld], canonical=fcan[weld], mirror=vmirror,
        face_mirror=fmirror_face, face_material=material.astype(np.int64),
        material_colors=np.asarray(template.material_colors, dtype=np.float64), weld=weld.astype(np.int64),
        chart=chart, levels=int(levels))
    topo = Topology(base_vertices=bw, base_faces=bf, base_canonical=bcan, base_mirror=bmirror,
                    base_skin_joints=bsj, base_skin_weights=bsw, subdivision=s.tocsr(), fine_faces=ff,
                    fine_mirror=fmirror)
    if len(_CACHE) >= 4:  # a template or two, at a density or two, in practice; do not grow
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (template, topo, mesh)
    return topo, mesh


def load_character(template=None, levels: int = LEVELS) -> CharacterMesh:
    """The template's character mesh (default: the shipped horse), in the template's rest pose."""
    if template is None:
        from ..template import load_default

        template = load_default()
    return topology_and_mesh(template, levels)[1]
