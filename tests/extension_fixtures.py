"""Data for the extension's tests and benchmark, made from the baked horse template.

* `synthetic_scene`: the template posed by a clip frame, seen by a pinhole camera, ray cast
  into an exact dual point map (training.raycast), with a flat-shaded render of the first layer
  as the photo (the template's material colours, a plain background) and the silhouette.
* `oracle_model`: a real ONNX model with the tensors of docs/model_io.md whose outputs are a
  fixed dual point map whatever the input: a stand-in for the trained predictor that still gives
  the fitter a real animal, so the whole chain (server, client, crop, fit, scene) runs on it.

Only tests and benchmarks import this (it needs onnx and embreex, development packages).
"""

from __future__ import annotations

import os

import numpy as np

from dualpm_addon import camera
from dualpm_addon import template as template_mod

BACKGROUND = np.array([200, 215, 230], dtype=np.uint8)


def synthetic_scene(t=None, size: int = 160, clip: str = "Walk", frame: int = 5, azimuth_deg: float = -60.0,
                    elevation_deg: float = 12.0, focal_mm: float = 50.0, fill: float = 0.8, layers: int = 4) -> dict:
    """A posed template seen from the side: rgb (size, size, 3) uint8, mask, and the map arrays
    (P, Q, occupancy, confidence, intrinsics) on the same grid; confidence 5 where occupied."""
    from training import raycast

    t = t or template_mod.load_default()
    c = t.clip(clip)
    verts = t.pose_vertices(c.rotations[frame], c.root_translation[frame], c.offsets[frame])
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    radius = 0.5 * np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    fov = 2 * np.arctan(18.0 / focal_mm)
    dist = radius / np.tan(0.5 * fill * fov)
    eye = centre + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    w2c = camera.look_at(eye, centre)
    k = camera.intrinsics_from_focal_mm(focal_mm, size, size)
    v_cam = verts @ w2c[:3, :3].T + w2c[:3, 3]
    topo = raycast.topology(t.vertices, t.faces)
    maps = raycast.point_maps(v_cam, t.canonical_vertices, topo, k, size, size, layers)
    occ = maps["occupancy"] > 0.5
    hits = maps["hits"]
    face0 = hits.face[0].reshape(size, size)
    rgb = np.broadcast_to(BACKGROUND, (size, size, 3)).copy()
    src = topo.source_face[np.maximum(face0, 0)]
    colour = t.material_colors[t.face_material[src]]  # linear
    # Lambert shading against a light from the camera's upper left keeps the render readable.
    tri = v_cam[t.faces[src]]
    n = np.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    light = np.array([-0.4, -0.6, -0.7]) / np.linalg.norm([-0.4, -0.6, -0.7])
    shade = 0.35 + 0.65 * np.abs(n @ light)
    lin = np.clip(colour * shade[..., None], 0, 1)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    rgb[occ[0]] = np.round(srgb[occ[0]] * 255).astype(np.uint8)
    conf = np.where(occ, 5.0, 1.0).astype(np.float32)
    return {
        "rgb": rgb, "mask": occ[0].copy(), "P": maps["P"], "Q": maps["Q"],
        "occupancy": maps["occupancy"], "confidence": conf, "intrinsics": k.astype(np.float32),
        "world_to_camera": w2c, "clip": clip, "frame": frame,
    }


def oracle_model(path: str, scene: dict, model_version: str = "oracle-test") -> str:
    """An ONNX model (docs/model_io.md tensors) that returns `scene`'s map for any input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = scene["P"].shape[1]
    layers = scene["P"].shape[0]
    inits = []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    nodes = [
        helper.make_node("Shape", ["image"], ["shape_img"]),
        helper.make_node("Slice", ["shape_img", const("s0", [0], np.int64), const("s1", [1], np.int64)], ["n"]),
    ]
    # The mask must be read too (an input no node uses is dropped by ONNX Runtime's optimiser,
    # and the contract says both inputs exist): add 0 * mean(mask) to the occupancy.
    nodes += [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
              helper.make_node("ReduceMean", ["mask_f"], ["mask_mean"], keepdims=0),
              helper.make_node("Mul", ["mask_mean", const("zero", 0.0)], ["mask_zero"])]
    outs = {"P": scene["P"], "Q": scene["Q"], "occupancy": scene["occupancy"], "confidence": scene["confidence"]}
    for name, arr in outs.items():
        arr = np.asarray(arr, dtype=np.float32)[None]
        dims = const(f"{name}_dims", list(arr.shape[1:]), np.int64)
        nodes.append(helper.make_node("Concat", ["n", dims], [f"{name}_shape"], axis=0))
        target = f"{name}_raw" if name == "occupancy" else name
        nodes.append(helper.make_node("Expand", [const(f"{name}_const", arr), f"{name}_shape"], [target]))
    nodes.append(helper.make_node("Add", ["occupancy_raw", "mask_zero"], ["occupancy"]))
    graph = helper.make_graph(
        nodes, "dualpm_oracle",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3]),
         helper.make_tensor_value_info("mask", TensorProto.UINT8, ["N", size, size])],
        [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", layers, size, size, 3]),
         helper.make_tensor_value_info("Q", TensorProto.FLOAT, ["N", layers, size, size, 3]),
         helper.make_tensor_value_info("occupancy", TensorProto.FLOAT, ["N", layers, size, size]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N", layers, size, size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dualpm-oracle")
    model.ir_version = 8
    from dualpm_addon import __version__

    for k, v in {"dualpm_version": __version__, "model_version": model_version,
                 "input_size": str(size), "layers": str(layers)}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    tmp = f"{path}.partial"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def write_png(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> str:
    from dualpm_addon import preview

    preview.write_png(path, rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1))
    return path
