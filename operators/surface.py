"""The fitted surface: a triangle mesh with the template's materials, built with foreach_set."""

from __future__ import annotations

import bpy
import numpy as np


def new_surface_mesh(name: str, vertices: np.ndarray, faces: np.ndarray,
                     face_material: np.ndarray | None = None, material_names=(), material_colors=None):
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.attributes["position"].data.foreach_set("vector", vertices.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate(clean_customdata=False)
    if material_colors is not None and len(material_names):
        for mname, rgb in zip(material_names, np.asarray(material_colors, dtype=np.float64)):
            mesh.materials.append(_flat_material(f"DualPM {mname}", rgb))
        if face_material is not None:
            mesh.polygons.foreach_set("material_index", np.asarray(face_material, dtype=np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
    mesh.update()
    return mesh


def _flat_material(name: str, rgb) -> "bpy.types.Material":
    mat = bpy.data.materials.new(name)
    colour = (float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)
    mat.diffuse_color = colour
    if not getattr(mat, "node_tree", None):
        mat.use_nodes = True
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = colour
        bsdf.inputs["Roughness"].default_value = 0.7
    return mat
