"""`dualpm export CKPT --out FILE.onnx`: a trained checkpoint to the ONNX model of docs/model_io.md.

Inputs `image` uint8 [N,160,160,3] and `mask` uint8 [N,160,160]; outputs `P`, `Q` [N,4,160,160,3],
`occupancy`, `confidence` [N,4,160,160]; N dynamic. Normalisation is inside the graph. After
writing, the model is run by ONNX Runtime (CPU provider, and CUDA where available) on the same
random batch as torch, and the export fails unless every output agrees within 1e-3 relative
(max |a - b| / max(|b|, 1e-3 * max|b|) per tensor... see `parity`). The figures go to stderr and,
with --json, to a file. `--calibrate VAL_DIR` first chooses a per-layer occupancy logit bias on
validation renders (training/calibrate.py) and folds it into the graph (metadata
`occupancy_bias`).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from dualpm_addon import __version__
from dualpm_addon.errors import DualPMError
from training.network import ExportWrapper
from training.train import load_network

OUTPUTS = ("P", "Q", "occupancy", "confidence")
PARITY_TOLERANCE = 1e-3


def add_arguments(p):
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by dualpm train")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--model-version", default="", help="metadata model_version (default: the checkpoint's name and step)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--json", help="write the parity figures here")
    p.add_argument("--calibrate", metavar="VAL_DIR",
                   help="validation samples (dualpm synth) on which to calibrate each layer's occupancy threshold "
                        "(training/calibrate.py); the bias is folded into the graph")
    p.add_argument("--calibration-samples", type=int, default=48, metavar="N", help="use at most N of them (48)")
    p.add_argument("--no-pretrained", action="store_true", help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def sample_inputs(n: int = 2, size: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random image batch and a mask batch mixing the three mask states."""
    r = np.random.default_rng(seed)
    image = r.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    mask = np.full((n, size, size), 128, np.uint8)
    mask[0, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    if n > 1:
        mask[1] = 0
        mask[1, size // 3:, :] = 255
    return image, mask


def export_onnx(net, path: str, model_version: str, opset: int = 17, occupancy_bias=None) -> None:
    import onnx

    net = net.eval().cpu()
    size = net.cfg.size
    image, mask = sample_inputs(1, size)
    wrapper = ExportWrapper(net, occupancy_bias).eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (torch.from_numpy(image), torch.from_numpy(mask)), tmp,
            input_names=["image", "mask"], output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "N"} for name in ("image", "mask", *OUTPUTS)},
            opset_version=opset, dynamo=False)
    model = onnx.load(tmp)
    meta = {"dualpm_version": __version__, "model_version": model_version,
            "input_size": str(size), "layers": str(net.cfg.layers),
            "occupancy_bias": ",".join(f"{float(b):.4f}" for b in wrapper.occupancy_bias.flatten())}
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, path)
    os.remove(tmp)


def parity(net, path: str, providers: list[str] | None = None, n: int = 2, seed: int = 1,
           occupancy_bias=None) -> dict:
    """Largest relative difference per output between torch and ONNX Runtime, per provider.
    Relative to the tensor's largest magnitude (a few elements near zero make per-element ratios
    meaningless)."""
    import onnxruntime as ort

    image, mask = sample_inputs(n, net.cfg.size, seed)
    with torch.no_grad():
        ref = ExportWrapper(net.eval().cpu(), occupancy_bias)(torch.from_numpy(image), torch.from_numpy(mask))
    ref = {k: v.numpy() for k, v in zip(OUTPUTS, ref)}
    available = ort.get_available_providers()
    providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    out = {}
    for prov in providers:
        sess = ort.InferenceSession(path, providers=[prov])
        got = dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {"image": image, "mask": mask})))
        out[prov] = {k: float(np.abs(got[k] - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-12)) for k in OUTPUTS}
    return out


def run(args) -> int:
    if not args.out.endswith(".onnx"):
        raise DualPMError(f"--out {args.out}: must end in .onnx")
    net = load_network(args.checkpoint, pretrained=not args.no_pretrained)
    version = args.model_version or os.path.splitext(os.path.basename(args.checkpoint))[0]
    meta_json = os.path.splitext(args.checkpoint)[0] + ".json"
    if not args.model_version and os.path.isfile(meta_json):
        with open(meta_json) as f:
            version = f"{version}-step{json.load(f).get('step', 0)}"
    bias, calibration = None, None
    if args.calibrate:
        from training.calibrate import occupancy_bias
        from training.dataset import list_samples

        if args.calibration_samples < 1:
            raise DualPMError(f"--calibration-samples {args.calibration_samples}: must be 1 or more")
        files = list_samples(args.calibrate)[: args.calibration_samples]  # it refuses a folder without samples
        print(f"dualpm export: calibrating occupancy on {len(files)} samples of {args.calibrate}", file=sys.stderr)
        bias, calibration = occupancy_bias(net, files)
        calibration["data"] = args.calibrate
    print(f"dualpm export: writing {args.out}", file=sys.stderr)
    export_onnx(net, args.out, version, args.opset, occupancy_bias=bias)
    figures = parity(net, args.out, occupancy_bias=bias)
    worst = max(v for p in figures.values() for v in p.values())
    report = {"model": args.out, "model_version": version, "parity": figures, "worst_relative": worst,
              "tolerance": PARITY_TOLERANCE, "bytes": os.path.getsize(args.out)}
    if calibration is not None:
        report["occupancy_calibration"] = dict(calibration, bias=[round(float(b), 4) for b in bias])
    print(json.dumps(report, indent=1), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if worst > PARITY_TOLERANCE:
        raise DualPMError(f"{args.out}: ONNX Runtime differs from torch by {worst:.2e} relative (> {PARITY_TOLERANCE})")
    return 0
