"""A small glTF 2.0 binary (.glb) writer: a skeleton, an optional skinned mesh, an optional animation.

Self-contained (numpy and the standard library). Conventions:

* Input is in our model space (Blender's: Z up, the animal faces -Y). glTF is Y up, so a parent
  node rotates everything by -90 degrees about X, exactly what Blender's glTF exporter does;
  Blender's importer undoes it, so a file round-trips to the same model-space positions.
* One node per joint. Rest: local transform B_parent^-1 B_j (B_j the Skeleton's rest frame).
  Pose: node rotation = rest rotation x q_j, node translation = rest translation + rest
  rotation x o_j (the Skeleton's local head offset), root translation added to the root node.
* Skinning: inverse bind matrices B_j^-1; vertices with up to 4 influences.
* Animation: one LINEAR sampler per animated property, keyframes at frame / fps seconds.
* Material (optional): one PBR metallic-roughness material (character.material.Material); its
  base-colour texture is embedded as a PNG in the binary chunk and read through TEXCOORD_0, the
  mesh's uv (V, 2) with v up (Blender's) written as glTF's v down (1 - v).
"""

from __future__ import annotations

import json
import struct

import numpy as np

from .atomic import write_bytes
from .errors import DualPMError
from .rotations import matrix_to_quat, quat_mul, quat_normalize
from .skeleton import Skeleton

_FLOAT, _USHORT, _UINT = 5126, 5123, 5125
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_Z_UP_TO_Y_UP = [-np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)]  # glTF quaternion order: x, y, z, w


class _Builder:
    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, component: int, width: int, target: int | None = None,
            minmax: bool = False) -> int:
        dtype = {_FLOAT: "<f4", _USHORT: "<u2", _UINT: "<u4"}[component]
        data = np.ascontiguousarray(np.asarray(array).astype(dtype))
        while len(self.blob) % 4:
            self.blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += data.tobytes()
        self.views.append(view)
        count = data.size // width
        acc = {"bufferView": len(self.views) - 1, "componentType": component, "count": count, "type": _TYPE[width]}
        if minmax:
            flat = data.reshape(count, width).astype(np.float64)
            acc["min"] = flat.min(axis=0).tolist()
            acc["max"] = flat.max(axis=0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _add_material(gltf: dict, b: _Builder, material, has_uv: bool) -> None:
    """materials[0] from a character.material.Material; its texture as images[0] (PNG)."""
    pbr = {"baseColorFactor": [float(c) for c in material.base_color], "metallicFactor": float(material.metallic),
           "roughnessFactor": float(material.roughness)}
    if material.base_color_texture is not None:
        if not has_uv:
            raise DualPMError("glTF mesh: a textured material needs the mesh's uv")
        png = material.png()
        while len(b.blob) % 4:
            b.blob.append(0)
        b.views.append({"buffer": 0, "byteOffset": len(b.blob), "byteLength": len(png)})
        b.blob += png
        gltf["images"] = [{"bufferView": len(b.views) - 1, "mimeType": "image/png", "name": material.name}]
        # Linear filtering with mipmaps; clamp, so a chart's border never wraps to the far side.
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    gltf["materials"] = [{"name": material.name, "pbrMetallicRoughness": pbr}]


def _xyzw(q: np.ndarray) -> np.ndarray:
    """Our (w, x, y, z) quaternions in glTF's (x, y, z, w) order."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def build_glb(skeleton: Skeleton, *, rotations=None, root_translation=None, offsets=None, fps: float = 24.0,
              vertices=None, faces=None, skin_joints=None, skin_weights=None, name: str = "dualpm",
              animation_name: str = "motion", uv=None, material=None) -> bytes:
    """The .glb file's bytes; see `write_glb`."""
    j = skeleton.num_joints
    local_rest = skeleton.local_rest_matrices
    rest_q = matrix_to_quat(local_rest[:, :3, :3])
    rest_t = local_rest[:, :3, 3]
    b = _Builder()
    children = [[] for _ in range(j)]
    for k, p in enumerate(skeleton.parents):
        if p >= 0:
            children[p].append(k)
    nodes = []
    for k in range(j):
        node = {"name": skeleton.joint_names[k], "translation": rest_t[k].tolist(),
                "rotation": _xyzw(rest_q[k]).tolist()}
        if children[k]:
            node["children"] = children[k]
        nodes.append(node)
    armature = len(nodes)
    nodes.append({"name": name, "rotation": _Z_UP_TO_Y_UP, "children": [0]})
    scene_nodes = [armature]
    gltf: dict = {"asset": {"version": "2.0", "generator": "dualpm_addon.gltf_write"}, "nodes": nodes,
                  "scenes": [{"nodes": scene_nodes}], "scene": 0}

    if vertices is not None:
        v = np.asarray(vertices, dtype=np.float64)
        fc = np.asarray(faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or fc.ndim != 2 or fc.shape[1] != 3:
            raise DualPMError("glTF mesh: vertices must be (V, 3) and faces (F, 3)")
        if fc.size and (fc.min() < 0 or fc.max() >= len(v)):
            raise DualPMError("glTF mesh: a face refers to a vertex that does not exist")
        attrs = {"POSITION": b.add(v, _FLOAT, 3, 34962, minmax=True)}
        prim = {"attributes": attrs, "indices": b.add(fc.reshape(-1), _UINT, 1, 34963), "mode": 4}
        mesh_node = {"name": f"{name}_mesh", "mesh": 0}
        if uv is not None:
            t = np.asarray(uv, dtype=np.float64)
            if t.shape != (len(v), 2):
                raise DualPMError(f"glTF mesh: uv has shape {t.shape}, expected ({len(v)}, 2)")
            attrs["TEXCOORD_0"] = b.add(np.stack([t[:, 0], 1.0 - t[:, 1]], 1), _FLOAT, 2, 34962)
        if material is not None:
            prim["material"] = 0
            _add_material(gltf, b, material, uv is not None)
        if skin_joints is not None:
            sj = np.asarray(skin_joints, dtype=np.int64)
            sw = np.asarray(skin_weights, dtype=np.float64)
            if sj.shape != (len(v), 4) or sw.shape != (len(v), 4):
                raise DualPMError("glTF mesh: skin joints and weights must be (V, 4)")
            if sj.min() < 0 or sj.max() >= j:
                raise DualPMError("glTF mesh: a skin joint index is outside the skeleton")
            sw = np.where(sw > 0, sw, 0.0)
            sw = sw / np.maximum(sw.sum(axis=1, keepdims=True), 1e-12)
            attrs["JOINTS_0"] = b.add(np.where(sw > 0, sj, 0), _USHORT, 4, 34962)
            attrs["WEIGHTS_0"] = b.add(sw, _FLOAT, 4, 34962)
            inv = np.linalg.inv(skeleton.rest_matrices)
            # glTF matrices are column-major.
            ibm = b.add(np.transpose(inv, (0, 2, 1)).reshape(-1), _FLOAT, 16)
            gltf["skins"] = [{"joints": list(range(j)), "inverseBindMatrices": ibm, "skeleton": armature}]
            mesh_node["skin"] = 0
        gltf["meshes"] = [{"name": f"{name}_mesh", "primitives": [prim]}]
        nodes.append(mesh_node)
        scene_nodes.append(len(nodes) - 1)

    if rotations is not None:
        q = quat_normalize(np.asarray(rotations, dtype=np.float64))
        if q.ndim != 3 or q.shape[1:] != (j, 4):
            raise DualPMError(f"glTF animation: rotations have shape {q.shape}, expected (frames, {j}, 4)")
        f = q.shape[0]
        if f == 0:
            raise DualPMError("glTF animation: no frames")
        if not fps > 0:
            raise DualPMError("glTF animation: fps must be positive")
        times = b.add(np.arange(f) / fps, _FLOAT, 1, minmax=True)
        node_q = quat_mul(rest_q[None], q)
        # Neighbouring keys on the same hemisphere so LINEAR interpolation takes the short way.
        for i in range(1, f):
            flip = np.sum(node_q[i] * node_q[i - 1], axis=-1) < 0
            node_q[i, flip] *= -1
        node_t = np.broadcast_to(rest_t, (f, j, 3)).copy()
        if offsets is not None:
            o = np.asarray(offsets, dtype=np.float64)
            node_t += np.einsum("jab,fjb->fja", local_rest[:, :3, :3], o)
        if root_translation is not None:
            node_t[:, 0] += np.asarray(root_translation, dtype=np.float64)
        moving = np.any(np.abs(node_t - rest_t) > 1e-9, axis=(0, 2))
        moving[0] = root_translation is not None or moving[0]
        samplers, channels = [], []
        for k in range(j):
            samplers.append({"input": times, "output": b.add(_xyzw(node_q[:, k]), _FLOAT, 4), "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": k, "path": "rotation"}})
            if moving[k]:
                samplers.append({"input": times, "output": b.add(node_t[:, k], _FLOAT, 3), "interpolation": "LINEAR"})
                channels.append({"sampler": len(samplers) - 1, "target": {"node": k, "path": "translation"}})
        gltf["animations"] = [{"name": animation_name, "samplers": samplers, "channels": channels}]

    while len(b.blob) % 4:
        b.blob.append(0)
    gltf["buffers"] = [{"byteLength": len(b.blob)}]
    if b.views:
        gltf["bufferViews"] = b.views
        gltf["accessors"] = b.accessors
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if b.blob:
        chunks += struct.pack("<II", len(b.blob), 0x004E4942) + bytes(b.blob)
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def write_glb(path, skeleton: Skeleton, **kwargs) -> None:
    """Write a .glb: the skeleton; with `vertices`/`faces` (and `skin_joints`/`skin_weights`) a
    (skinned) mesh, with `uv` (V, 2) and `material` (character.material.Material) textured;
    with `rotations` (F, J, 4) (and `root_translation` (F, 3), `offsets` (F, J, 3), `fps`) an
    animation. Written atomically."""
    write_bytes(path, build_glb(skeleton, **kwargs), "glTF file")


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """(JSON, binary chunk) of a .glb; enough to inspect what `build_glb` wrote."""
    if len(data) < 20 or struct.unpack_from("<I", data, 0)[0] != 0x46546C67:
        raise DualPMError("not a glTF binary file")
    length = struct.unpack_from("<I", data, 8)[0]
    off, js, bin_ = 12, None, b""
    while off + 8 <= min(length, len(data)):
        n, kind = struct.unpack_from("<II", data, off)
        chunk = data[off + 8:off + 8 + n]
        if kind == 0x4E4F534A:
            js = json.loads(chunk.decode("utf-8"))
        elif kind == 0x004E4942:
            bin_ = bytes(chunk)
        off += 8 + n
    if js is None:
        raise DualPMError("glTF binary file without a JSON chunk")
    return js, bin_


def accessor_array(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    """An accessor's data as a numpy array (count, width) (tightly packed views only)."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {_FLOAT: "<f4", _USHORT: "<u2", _UINT: "<u4"}[acc["componentType"]]
    width = {v: k for k, v in _TYPE.items()}[acc["type"]]
    a = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=view["byteOffset"])
    return a.reshape(acc["count"], width)
