"""In-process ONNX Runtime runner for the DualPM predictor (docs/model_io.md).

`Runner.predict(image, mask=None)` has the same interface as the inference client
(dualpm_addon.client), so the cropping code, the command line and the tests take either. The
server (model_server) wraps one Runner. onnxruntime is imported only when a Runner is made, so
importing this module costs nothing inside Blender.

Tensor checks (`check_inputs`) live here so the server and the runner reject the same inputs with
the same one-line reasons.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DualPMError

INPUTS = ("image", "mask")
OUTPUTS = ("P", "Q", "occupancy", "confidence")
UNKNOWN_MASK = 128  # the mask input's value where no mask is given
DEVICES = ("auto", "cpu", "cuda")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(_ROOT, "assets", "dualpm.onnx")


def default_model_path() -> str:
    """assets/dualpm.onnx, or a one-line error saying how to get a model."""
    if not os.path.isfile(DEFAULT_MODEL):
        raise DualPMError(f"no model: {DEFAULT_MODEL} does not exist (train and export one, or pass --model FILE)")
    return DEFAULT_MODEL


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise DualPMError("onnxruntime is not installed in this Python (pip install onnxruntime, "
                          "or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for `device` (auto: CUDA when present, else CPU)."""
    if device not in DEVICES:
        raise DualPMError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise DualPMError("device cuda: onnxruntime has no CUDA execution provider here "
                          "(install onnxruntime-gpu and the CUDA libraries, or use --device cpu)")
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def check_inputs(inputs: dict, size: int, max_batch: int | None = None) -> int:
    """Check names, datatypes and shapes against the contract; return the batch size N."""
    for name in inputs:
        if name not in INPUTS:
            raise DualPMError(f"unknown input {name!r}; the model's inputs are {', '.join(INPUTS)}")
    for name in INPUTS:
        if name not in inputs:
            raise DualPMError(f"missing input {name!r}; the model's inputs are {', '.join(INPUTS)}")
    expect = {"image": ["N", size, size, 3], "mask": ["N", size, size]}
    n = None
    for name in INPUTS:
        a = inputs[name]
        if a.dtype != np.uint8:
            raise DualPMError(f"input {name!r} has datatype {datatype_of(a.dtype)}, expected UINT8")
        shape = list(a.shape)
        if len(shape) != len(expect[name]) or shape[1:] != expect[name][1:]:
            raise DualPMError(f"input {name!r} has shape {shape}, expected {_shape_str(expect[name])}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise DualPMError(f"input {name!r} has batch size {shape[0]}, but 'image' has {n}")
    if n < 1:
        raise DualPMError("inputs have batch size 0")
    if max_batch is not None and n > max_batch:
        raise DualPMError(f"batch size {n} exceeds this server's limit of {max_batch}")
    return n


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


_V2_TYPES = {"uint8": "UINT8", "int8": "INT8", "uint16": "UINT16", "int16": "INT16", "uint32": "UINT32",
             "int32": "INT32", "uint64": "UINT64", "int64": "INT64", "float16": "FP16", "float32": "FP32",
             "float64": "FP64", "bool": "BOOL"}


def datatype_of(dtype) -> str:
    """The KServe v2 datatype name of a numpy dtype."""
    return _V2_TYPES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def as_batch(image, mask=None, size: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image, mask, batched): accept (H,W,3) or (N,H,W,3) uint8 and an optional (H,W) / (N,H,W)
    mask (uint8 0..255, or bool: True = animal); a missing mask is 128 (unknown) everywhere."""
    image = np.asarray(image)
    batched = image.ndim == 4
    if not batched:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise DualPMError(f"image: expected (H, W, 3) or (N, H, W, 3) uint8, got {np.shape(image)} {image.dtype}")
    if size is not None and image.shape[1:3] != (size, size):
        raise DualPMError(f"image: the model takes {size}x{size} crops, got {image.shape[2]}x{image.shape[1]} "
                          f"(crop with dualpm_addon.preprocess first)")
    if mask is None:
        mask = np.full(image.shape[:3], UNKNOWN_MASK, np.uint8)
    else:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            mask = mask.astype(np.uint8) * 255
        if not batched:
            mask = mask[None]
        if mask.shape != image.shape[:3] or mask.dtype != np.uint8:
            raise DualPMError(f"mask: expected {image.shape[1:3] if not batched else image.shape[:3]} uint8 or bool, "
                              f"got {np.shape(mask)} {mask.dtype}")
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), batched


class Runner:
    """One ONNX Runtime session on the DualPM model; thread-safe (ORT sessions are)."""

    def __init__(self, model_path: str | None = None, device: str = "auto", threads: int | None = None,
                 spin: bool = False):
        ort = _import_ort()
        path = model_path or default_model_path()
        if not os.path.isfile(path):
            raise DualPMError(f"model {path}: no such file")
        providers = choose_providers(device, ort.get_available_providers())
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3  # warnings from ORT go nowhere useful for the artist
        if not spin:  # idle worker threads sleep at once instead of busy-waiting for the next run,
            # leaving the cores to whatever else this process (an HTTP server) does between runs
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidProtobuf, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DualPMError(f"model {os.path.basename(path)}: ONNX Runtime cannot load it ({first})") from None
        self.providers = list(self.session.get_providers())
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise DualPMError("device cuda: onnxruntime could not start CUDA (missing CUDA or cuDNN libraries?)")
        self.path = path
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._ort = ort
        self._check_contract()

    def _check_contract(self):
        name = os.path.basename(self.path)
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        for want, have, kind in ((INPUTS, ins, "input"), (OUTPUTS, outs, "output")):
            for n in want:
                if n not in have:
                    raise DualPMError(f"model {name}: has no {kind} {n!r} (docs/model_io.md)")
        shape = ins["image"].shape
        if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] != shape[2] or shape[3] != 3:
            raise DualPMError(f"model {name}: input 'image' has shape {shape}, expected [N, S, S, 3]")
        self.input_size = int(shape[1])
        layers = outs["occupancy"].shape[1]
        self.layers = int(layers) if isinstance(layers, int) else int(self.metadata.get("layers", 4))
        if ins["image"].type != "tensor(uint8)" or ins["mask"].type != "tensor(uint8)":
            raise DualPMError(f"model {name}: inputs must be uint8 (docs/model_io.md)")

    @property
    def device(self) -> str:
        return "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def run_options(self):
        """A RunOptions whose `terminate = True` (from any thread) aborts the run it is passed to."""
        return self._ort.RunOptions()

    def run(self, inputs: dict, outputs=OUTPUTS, run_options=None, max_batch: int | None = None) -> dict:
        """Raw batched run: checked uint8 inputs in, float32 outputs out (by name)."""
        check_inputs(inputs, self.input_size, max_batch)
        try:
            values = self.session.run(list(outputs), {k: inputs[k] for k in INPUTS}, run_options)
        except Exception as e:
            if run_options is not None and run_options.terminate:
                raise TimeoutError("inference run terminated") from None
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DualPMError(f"model run failed: {first}") from None
        return dict(zip(outputs, values))

    def predict(self, image_uint8, mask_uint8=None) -> dict:
        """One crop (H,W,3) or a batch (N,H,W,3) of crops at the model's size; mask None = unknown.
        Returns P, Q, occupancy, confidence as float32, batched like the input."""
        image, mask, batched = as_batch(image_uint8, mask_uint8, self.input_size)
        out = self.run({"image": image, "mask": mask})
        return out if batched else {k: v[0] for k, v in out.items()}

    def close(self):
        self.session = None

