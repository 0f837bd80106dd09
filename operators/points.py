"""The amodal point cloud as a mesh of vertices, shown through a Geometry Nodes point display.

Speed: every array goes in through `foreach_set` on attribute data, and the positions through the
`position` attribute rather than `vertices[].co` (the latter converts per element and is about
70x slower); a million points with all attributes import in about 0.1 s.

Attributes (point domain): `Q` (FLOAT_VECTOR, canonical point), `layer` (INT, 0 = nearest),
`confidence` (FLOAT), `colour` (FLOAT_COLOR, the photo's colour at the point's pixel, linear).
"""

from __future__ import annotations

import bpy
import numpy as np

DISPLAY_GROUP = "DualPM Point Display"
SIZE_SOCKET = "Point Size"
DEFAULT_POINT_SIZE = 0.006  # metres: a horse-sized animal from a 160x160 grid has ~1 cm spacing

# sRGB byte -> linear float, as Blender colour-manages byte colours.
_SRGB_TO_LINEAR = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                           ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4).astype(np.float32)


def srgb_to_linear(colour_u8: np.ndarray) -> np.ndarray:
    return np.take(_SRGB_TO_LINEAR, np.asarray(colour_u8, dtype=np.uint8))


def set_positions(mesh, positions: np.ndarray) -> None:
    mesh.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(positions, dtype=np.float32).ravel())


def get_positions(mesh) -> np.ndarray:
    out = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.attributes["position"].data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def new_point_mesh(name: str, positions: np.ndarray, q=None, layer=None, confidence=None, colour=None):
    """A mesh of len(positions) loose vertices with the point attributes that are given."""
    positions = np.asarray(positions)
    n = len(positions)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(n)
    set_positions(mesh, positions)
    if q is not None:
        mesh.attributes.new("Q", "FLOAT_VECTOR", "POINT").data.foreach_set(
            "vector", np.ascontiguousarray(q, dtype=np.float32).ravel())
    if layer is not None:
        mesh.attributes.new("layer", "INT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(layer, dtype=np.int32))
    if confidence is not None:
        mesh.attributes.new("confidence", "FLOAT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(confidence, dtype=np.float32))
    if colour is not None:
        rgba = np.ones((n, 4), dtype=np.float32)
        rgba[:, :3] = srgb_to_linear(colour)
        attr = mesh.attributes.new("colour", "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", rgba.ravel())
        mesh.color_attributes.active_color = attr
    mesh.update()
    return mesh


def point_material(name: str = "DualPM Points"):
    """Emission-free Principled material whose base colour reads the `colour` attribute."""
    mat = bpy.data.materials.new(name)
    if not getattr(mat, "node_tree", None):  # 4.2 creates the tree only with use_nodes
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = next((n for n in nt.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next(n for n in nt.nodes if n.type == "OUTPUT_MATERIAL")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = "colour"
    attr.location = (bsdf.location[0] - 300, bsdf.location[1])
    nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    mat.diffuse_color = (0.8, 0.6, 0.4, 1.0)  # solid-mode colour when attributes are not shown
    return mat


def point_display_group(material):
    """Geometry Nodes: Mesh to Points (radius = half the exposed Point Size) -> Set Material.

    A new group per reconstruction, so changing one result's material never touches another's.
    """
    ng = bpy.data.node_groups.new(DISPLAY_GROUP, "GeometryNodeTree")
    iface = ng.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    size = iface.new_socket(SIZE_SOCKET, in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value = DEFAULT_POINT_SIZE
    size.min_value = 0.0
    size.max_value = 1.0
    if hasattr(size, "subtype"):
        size.subtype = "DISTANCE"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    nodes, links = ng.nodes, ng.links
    gin = nodes.new("NodeGroupInput")
    gout = nodes.new("NodeGroupOutput")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    half = nodes.new("ShaderNodeMath")
    half.operation = "MULTIPLY"
    half.inputs[1].default_value = 0.5
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = material
    for i, n in enumerate((gin, half, to_points, set_mat, gout)):
        n.location = (i * 220 - 440, 0)
    links.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(gin.outputs[SIZE_SOCKET], half.inputs[0])
    links.new(half.outputs["Value"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
    return ng


def add_point_display(obj, group, size: float = DEFAULT_POINT_SIZE):
    """Attach the display as the object's last modifier; the size is a modifier input."""
    mod = obj.modifiers.new("DualPM Points", "NODES")
    mod.node_group = group
    set_point_size(mod, size)
    return mod


def size_identifier(mod) -> str:
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == SIZE_SOCKET:
            return item.identifier
    raise KeyError(SIZE_SOCKET)


def set_point_size(mod, size: float) -> None:
    mod[size_identifier(mod)] = float(size)
    mod.id_data.update_tag()  # ID properties set from Python do not tag the depsgraph themselves


def get_point_size(mod) -> float:
    return float(mod[size_identifier(mod)])
