"""A reconstruction's character: the character mesh (mesh.py) carried onto the fitted rig, posed
as in the photo, with the photo's colours baked into its atlas (texture.py).

`make` is the pipeline's step after the fit (pipeline.from_pointmap with Settings.character ==
"character"). Its result holds everything the writers need: rest vertices in model space (the
Armature modifier's input), the posed mesh in the photo's camera, the texture and the material.
A photo that colours too little of the animal (a mask covering almost nothing) gives the
template's flat colours in the same atlas, and the figures' note says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import texture as texture_mod
from .material import Material, textured

LOOKS = ("character", "template", "points")  # Settings.character: what the scene's surface is


@dataclass
class Character:
    """mesh: CharacterMesh with the instance's rest vertices (model space); posed_vertices (V, 3)
    the photo's camera space; texture: texture.Texture; material: material.Material; figures:
    the bake's shares and timings, rig_iou of the character's own outline where a mask was given."""

    mesh: object
    posed_vertices: np.ndarray
    texture: texture_mod.Texture
    material: Material
    figures: dict = field(default_factory=dict)

    @property
    def rest_vertices(self) -> np.ndarray:
        return self.mesh.vertices


_TEXELS: dict = {}


def texels(mesh, size: int = texture_mod.SIZE) -> texture_mod.TexelMap:
    """The mesh's texel map, kept for the last mesh (it depends on the UVs alone, ~50 ms)."""
    key = (id(mesh.uv), int(size))
    hit = _TEXELS.get(key)
    if hit is None or hit[0] is not mesh.uv:
        _TEXELS.clear()
        hit = _TEXELS[key] = (mesh.uv, texture_mod.texel_map(mesh.uv, mesh.faces, size))
    return hit[1]


def rest_shape(fit, template, mesh) -> np.ndarray:
    """(V, 3) the character's rest vertices on the fitted instance: each vertex carried by its
    bones' scale and thickness maps, as the fit carries the template's own vertices, and the
    surface repaired where those maps make it cut itself (repair.instance_rest)."""
    from .repair import instance_rest

    return np.asarray(instance_rest(mesh, template, fit).vertices, dtype=np.float64)


def pose(fit, rest: np.ndarray, mesh) -> np.ndarray:
    """(V, 3) rest vertices skinned by the fitted pose and placed in the photo's camera."""
    from ..skinning import linear_blend_skinning

    g = fit.rest_skeleton.forward_kinematics(fit.rotations)
    posed = linear_blend_skinning(rest, mesh.skin_joints, mesh.skin_weights, fit.rest_skeleton.skinning_matrices(g))
    m = fit.model_to_camera
    return posed @ m[:3, :3].T + m[:3, 3]


def make(fit, template, photo_rgb: np.ndarray, photo_mask, intrinsics: np.ndarray, rest: np.ndarray | None = None,
         size: int = texture_mod.SIZE, delight: str = "auto") -> Character:
    """The character of a fit: the mesh on the instance (`rest` (V, 3) when the shape was
    deformed, else rest_shape), posed, and the photo baked through `intrinsics` (3, 3, the
    photo's pixels) with `photo_mask` (H, W) bool or None; `delight` as texture.bake's."""
    from . import load_character

    t0 = time.perf_counter()
    base = load_character(template)
    rest = rest_shape(fit, template, base) if rest is None else np.asarray(rest, dtype=np.float64)
    mesh = base.with_vertices(rest)
    posed = pose(fit, rest, mesh)
    t1 = time.perf_counter()
    flat = np.asarray(mesh.material_colors, dtype=np.float64)[mesh.face_material]
    tex = texture_mod.bake(posed, mesh.faces, mesh.uv, mesh.canonical, photo_rgb, intrinsics, photo_mask,
                           texels=texels(mesh, size), fallback_colours=flat, mirrored_atlas=True, delight=delight)
    t2 = time.perf_counter()
    figures = {"vertices": mesh.num_vertices, "faces": int(len(mesh.faces)), "texture": dict(tex.figures),
               "timings_s": {"mesh": round(t1 - t0, 4), "bake": round(t2 - t1, 4)}}
    if photo_mask is not None:
        from .. import metrics

        figures["rig_iou"] = round(float(metrics.rig_iou(posed, mesh.faces, intrinsics,
                                                         np.asarray(photo_mask, dtype=bool))), 4)
    return Character(mesh=mesh, posed_vertices=posed, texture=tex, material=textured("DualPM Character", tex.image),
                     figures=figures)
