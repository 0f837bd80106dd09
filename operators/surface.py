"""The fitted surface, built with foreach_set: the template look (a triangle mesh with the
template's flat materials) or the character (one UV map, a Principled BSDF with the baked photo)."""

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


def new_character_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, material):
    """The character: a smooth triangle mesh with one UV map and one textured material
    (dualpm_addon.character.material.Material: its base-colour image packed into the .blend)."""
    mesh = new_surface_mesh(name, vertices, faces)
    layer = mesh.uv_layers.new(name="UVMap")
    layer.data.foreach_set("uv", np.asarray(uv, dtype=np.float32)[np.asarray(faces).ravel()].ravel())
    mesh.materials.append(textured_material(material))
    return mesh


def new_image(name: str, rgb: np.ndarray):
    """A packed sRGB image from (H, W, 3) uint8, row 0 the top (Blender stores the bottom row first)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(name, w, h, alpha=False)
    rgba = np.concatenate([rgb[::-1].astype(np.float32) / 255.0, np.ones((h, w, 1), np.float32)], axis=2)
    image.pixels.foreach_set(rgba.ravel())
    image.file_format = "PNG"
    image.pack()
    return image


def textured_material(material) -> "bpy.types.Material":
    """Principled BSDF whose Base Color is the material's packed image (its UV map: the mesh's)."""
    mat = bpy.data.materials.new(material.name)
    if not getattr(mat, "node_tree", None):
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = float(material.roughness)
    bsdf.inputs["Metallic"].default_value = float(material.metallic)
    if material.base_color_texture is not None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = new_image(f"{material.name} Texture", material.base_color_texture)
        tex.location = (bsdf.location.x - 320, bsdf.location.y)
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        mean = np.asarray(material.base_color_texture, np.float64).reshape(-1, 3).mean(0) / 255.0
        mat.diffuse_color = (*(float(c) ** 2.2 for c in mean), 1.0)  # the viewport's solid colour
    else:
        bsdf.inputs["Base Color"].default_value = tuple(float(c) for c in material.base_color)
        mat.diffuse_color = tuple(float(c) for c in material.base_color)
    return mat
