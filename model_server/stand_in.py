"""A small, real ONNX model with the exact tensors of docs/model_io.md, for tests and benchmarks.

The trained predictor (assets/dualpm.onnx) is large and comes from training; the server, the
client and the cropping logic only need a model that honours the tensor contract and behaves
plausibly. This one marks as "animal" whatever differs in colour from the photo's border (a blob
on a plain background), uses a given mask where the mask input is not 128, and places points on
rays at a few metres. `work` adds convolution layers whose result barely touches the output, to
make a run take longer (timeouts, crashes mid-request, slow-run tests).

Needs the `onnx` package (development only); the product never imports this module.
"""

from __future__ import annotations

import numpy as np

INPUT_SIZE = 160
LAYERS = 4
OPSET = 17
LAYER_SCALE = (1.0, 0.97, 0.4, 0.2)  # occupancy of each layer relative to layer 0
LAYER_DEPTH = (2.5, 2.8, 3.0, 3.3)  # metres along the ray, near to far


def build(path: str, work: int = 0, size: int = INPUT_SIZE, layers: int = LAYERS,
          model_version: str = "stand-in") -> str:
    """Write the stand-in model to `path` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if layers > len(LAYER_SCALE):
        raise ValueError(f"stand-in model supports at most {len(LAYER_SCALE)} layers")
    nodes, inits = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # Border ring (8 px) average: the background colour estimate.
    ring = np.zeros((1, 1, size, size), np.float32)
    b = max(1, size // 20)
    ring[..., :b, :] = ring[..., -b:, :] = ring[..., :, :b] = ring[..., :, -b:] = 1.0
    ring /= ring.sum()

    x = node("Div", [node("Cast", ["image"], "image_f", to=TensorProto.FLOAT), const("c255", 255.0)], "x")
    xc = node("Transpose", [x], "x_nchw", perm=[0, 3, 1, 2])
    bg = node("ReduceSum", [node("Mul", [xc, const("ring", ring)], "x_ring"), const("ax23", [2, 3], np.int64)],
              "bg", keepdims=1)
    diff = node("Sub", [xc, bg], "diff")
    d = node("Sqrt", [node("ReduceSum", [node("Mul", [diff, diff], "diff2"), const("ax1", [1], np.int64)],
                           "d2", keepdims=1)], "d")
    ds = node("AveragePool", [d], "d_smooth", kernel_shape=[9, 9], pads=[4, 4, 4, 4], count_include_pad=0)
    sal = node("Sigmoid", [node("Mul", [node("Sub", [ds, const("thr", 0.15)], "ds_t"), const("gain", 25.0)],
                                "ds_g")], "saliency")

    m = node("Div", [node("Cast", [node("Unsqueeze", ["mask", const("ax1b", [1], np.int64)], "mask4")],
                          "mask_f", to=TensorProto.FLOAT), const("c255b", 255.0)], "m")
    known = node("Clip", [node("Mul", [node("Abs", [node("Sub", [m, const("half", 128.0 / 255.0)], "m_c")], "m_a"),
                                       const("kscale", 255.0 / 127.0)], "m_k"), const("zero", 0.0), const("one", 1.0)],
                 "known")
    occ0 = node("Add", [node("Mul", [known, m], "km"),
                        node("Mul", [node("Sub", [const("one_b", 1.0), known], "unknown"), sal], "us")], "occ0")
    occ = node("Mul", [occ0, const("lscale", np.array(LAYER_SCALE[:layers]).reshape(1, layers, 1, 1))], "occupancy")
    raw = node("Sub", [node("Mul", [occ, const("c3", 3.0)], "occ3"), const("c1", 1.0)], "conf_raw")
    conf_core = node("Add", [const("one_c", 1.0), node("Exp", [raw], "conf_exp")],
                     "confidence" if work <= 0 else "conf_core")

    if work > 0:  # busy work that the output depends on, so no optimiser removes it
        rng = np.random.default_rng(0)
        h, ch = xc, 3
        for i in range(work):
            w = rng.normal(0, (2.0 / (9 * ch)) ** 0.5, (32, ch, 3, 3)).astype(np.float32)
            h = node("Relu", [node("Conv", [h, const(f"w{i}", w)], f"conv{i}", pads=[1, 1, 1, 1])], f"relu{i}")
            ch = 32
        tiny = node("Mul", [node("ReduceMean", [h], "busy_mean", keepdims=1), const("eps", 1e-7)], "busy")
        node("Add", [conf_core, tiny], "confidence")

    # Points: on the rays of a 50 mm-equivalent crop camera, a little nearer where occupied.
    f = 50.0 / 36.0 * size
    c = (np.arange(size) + 0.5 - size / 2) / f
    rays = np.stack(np.broadcast_arrays(c[None, :], c[:, None], np.ones((1, 1))), axis=-1)[None, None]
    z = node("Add", [const("depth", np.array(LAYER_DEPTH[:layers]).reshape(1, layers, 1, 1)),
                     node("Mul", [occ0, const("dz", -0.2)], "dz_occ")], "z")
    node("Mul", [node("Unsqueeze", [z, const("ax4", [4], np.int64)], "z5"), const("rays", rays)], "P")
    u = (np.arange(size) + 0.5) / size
    qgrid = np.stack(np.broadcast_arrays(u[None, :] - 0.5, np.zeros((1, 1)), 0.5 - u[:, None]), axis=-1)
    qgrid = qgrid[None, None] + np.array([0.0, 0.1, 0.0]) * np.arange(layers).reshape(1, layers, 1, 1, 1)
    node("Add", [node("Mul", [node("Unsqueeze", [x, const("ax1c", [1], np.int64)], "x5"), const("qs", 0.05)], "xq"),
                 const("qgrid", qgrid)], "Q")

    n = "N"
    graph = helper.make_graph(
        nodes, "dualpm_stand_in",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [n, size, size, 3]),
         helper.make_tensor_value_info("mask", TensorProto.UINT8, [n, size, size])],
        [helper.make_tensor_value_info("P", TensorProto.FLOAT, [n, layers, size, size, 3]),
         helper.make_tensor_value_info("Q", TensorProto.FLOAT, [n, layers, size, size, 3]),
         helper.make_tensor_value_info("occupancy", TensorProto.FLOAT, [n, layers, size, size]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [n, layers, size, size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dualpm-stand-in")
    model.ir_version = 8
    from dualpm_addon import __version__

    for k, v in {"dualpm_version": __version__, "model_version": model_version,
                 "input_size": str(size), "layers": str(layers)}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--work", type=int, default=0, help="extra conv layers to make each run slower")
    a = p.parse_args()
    print(build(a.out, work=a.work))
