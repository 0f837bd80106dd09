"""Data for the extension's tests and benchmark, made from the baked horse template.

* `synthetic_scene`: the template posed by a clip frame, seen by a pinhole camera, ray cast
  into an exact dual point map (training.raycast), with a flat-shaded render of the first layer
  as the photo (the template's material colours, a plain background) and the silhouette.
* `oracle_model`: a real ONNX model with the tensors of docs/model_io.md that answers the two
  passes of the cropping on the synthetic photo with their exact maps: a stand-in for the
  trained predictor that gives the fitter a real animal, so the whole chain (server, client,
  crop, fit, scene) runs on it.

Only tests and benchmarks import this (it needs onnx and embreex, development packages).
"""

from __future__ import annotations

import os

import numpy as np

from dualpm_addon import camera
from dualpm_addon import template as template_mod

BACKGROUND = np.array([200, 215, 230], dtype=np.uint8)


def _render(t, v_cam: np.ndarray, k: np.ndarray, size: int, layers: int) -> dict:
    """Ray cast the posed mesh (camera space) through K: the map arrays and a flat-shaded photo."""
    from training import raycast

    topo = raycast.topology(t.vertices, t.faces)
    maps = raycast.point_maps(v_cam, t.canonical_vertices, topo, k, size, size, layers)
    occ = maps["occupancy"] > 0.5
    face0 = maps["hits"].face[0].reshape(size, size)
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
    return {"rgb": rgb, "mask": occ[0].copy(), "P": maps["P"], "Q": maps["Q"], "occupancy": maps["occupancy"],
            "confidence": np.where(occ, 5.0, 1.0).astype(np.float32), "intrinsics": np.asarray(k, np.float32)}


def synthetic_scene(t=None, size: int = 160, clip: str = "Walk", frame: int = 5, azimuth_deg: float = -60.0,
                    elevation_deg: float = 12.0, focal_mm: float = 50.0, fill: float = 0.7, layers: int = 4) -> dict:
    """A posed template seen from the side: rgb (size, size, 3) uint8, mask, and the map arrays
    (P, Q, occupancy, confidence, intrinsics) on the same grid; confidence 5 where occupied.

    `crop` holds the same arrays for the crop the two-pass cropping (dualpm_addon.preprocess) cuts
    from this photo, rendered through that crop's own camera, and `crop_box` the box."""
    from dualpm_addon import preprocess

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
    scene = _render(t, v_cam, k, size, layers)
    # Pass 1 sees the whole photo (letterboxed: here the photo itself) and picks the crop box.
    blob = preprocess.animal_blob(scene, "synthetic")
    box = preprocess.square_box(preprocess.grid_bbox_to_photo(blob, preprocess.letterbox_box(size, size)))
    scene["crop"] = _render(t, v_cam, camera.crop_intrinsics(k, box, (size, size)), size, layers)
    scene["crop_box"] = np.asarray(box, dtype=np.float64)
    scene.update(world_to_camera=w2c, clip=clip, frame=frame)
    return scene


def oracle_model(path: str, scene: dict, model_version: str = "oracle-test") -> str:
    """An ONNX model (docs/model_io.md tensors) that plays the trained predictor on `scene`'s photo.

    The cropping runs the model twice: on the whole photo (to find the animal) and on the crop.
    The model tells them apart by the input's mean brightness (the whole photo shows more of the
    light background than the crop) and answers each with its exact map: the photo's map, then
    the crop's map through the crop's own camera. So on the synthetic photo the chain sees what a
    perfect predictor would give; on any other photo it answers one of the two horse maps."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dualpm_addon import preprocess

    whole, crop = scene, scene["crop"]
    size = whole["P"].shape[1]
    layers = whole["P"].shape[0]
    view1 = preprocess.crop_resize(whole["rgb"], preprocess.letterbox_box(size, size), size)
    view2 = preprocess.crop_resize(whole["rgb"], scene["crop_box"], size)
    m1, m2 = float(view1.mean()), float(view2.mean())
    if abs(m1 - m2) < 2.0:
        raise ValueError(f"oracle: the two passes' inputs are too alike to tell apart ({m1:.1f}, {m2:.1f})")
    threshold = 0.5 * (m1 + m2)
    first_is_brighter = m1 > m2
    inits = []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    nodes = [
        helper.make_node("Shape", ["image"], ["shape_img"]),
        helper.make_node("Slice", ["shape_img", const("s0", [0], np.int64), const("s1", [1], np.int64)], ["n"]),
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_f"], ["mean"], keepdims=0),  # over the whole batch
        helper.make_node("Greater", ["mean", const("threshold", threshold)], ["brighter"]),
        # the mask input is read too (an unused input would be pruned; the contract has both)
        helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["mask_f"], ["mask_mean"], keepdims=0),
        helper.make_node("Mul", ["mask_mean", const("zero", 0.0)], ["mask_zero"]),
    ]
    for name in ("P", "Q", "occupancy", "confidence"):
        a = np.asarray(whole[name], dtype=np.float32)[None]
        b = np.asarray(crop[name], dtype=np.float32)[None]
        first, second = (a, b) if first_is_brighter else (b, a)
        nodes.append(helper.make_node("Where", ["brighter", const(f"{name}_1", first), const(f"{name}_2", second)],
                                      [f"{name}_sel"]))
        dims = const(f"{name}_dims", list(a.shape[1:]), np.int64)
        nodes.append(helper.make_node("Concat", ["n", dims], [f"{name}_shape"], axis=0))
        target = f"{name}_raw" if name == "occupancy" else name
        nodes.append(helper.make_node("Expand", [f"{name}_sel", f"{name}_shape"], [target]))
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

    for key, v in {"dualpm_version": __version__, "model_version": model_version,
                   "input_size": str(size), "layers": str(layers)}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=v))
    onnx.checker.check_model(model)
    tmp = f"{path}.partial"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def write_png(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> str:
    from dualpm_addon import preview

    preview.write_png(path, rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1))
    return path
