"""Predictor latency: ONNX Runtime, CPU provider, batch 1, 160x160 (assets/dualpm.onnx).

Target (issue 4): <= 150 ms on the 2-core CPU. Reported: median and 90th percentile over
repeated runs after warm-up, with ONNX Runtime's default threads and with 1 thread (the machine
is shared, so the 1-thread figure is the one a busy machine approaches), and the model's size.

    python benchmarks/bench_predictor.py [--quick] [--json FILE] [--model FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LIMIT_MS = 150.0
DEFAULT_MODEL = os.path.join(ROOT, "assets", "dualpm.onnx")


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import onnxruntime

    return f"{os.cpu_count()}-core {cpu}, {platform.system()}, onnxruntime {onnxruntime.__version__}"


def _time(sess, feeds, n: int) -> list[float]:
    for _ in range(3):
        sess.run(None, feeds)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, feeds)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def run(quick: bool = False, model: str = DEFAULT_MODEL) -> list[dict]:
    import onnxruntime as ort

    if not os.path.isfile(model):
        raise SystemExit(f"bench_predictor: {model} not found (export a model first: dualpm export)")
    r = np.random.default_rng(0)
    feeds = {"image": r.integers(0, 256, (1, 160, 160, 3), dtype=np.uint8),
             "mask": np.full((1, 160, 160), 128, np.uint8)}
    n = 10 if quick else 40
    rows = []
    common = {"model": os.path.relpath(model, ROOT), "machine": machine(), "samples": n,
              "model_mb": round(os.path.getsize(model) / 2**20, 2)}
    for threads in (0, 1):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        ms = _time(sess, feeds, n)
        label = "default threads" if not threads else "1 thread"
        med = statistics.median(ms)
        p90 = float(np.percentile(ms, 90))
        rows.append({"name": f"predictor, ORT CPU, batch 1, {label} (median)", "value": round(med, 2), "unit": "ms",
                     "limit": LIMIT_MS, "pass": med <= LIMIT_MS, **common})
        rows.append({"name": f"predictor, ORT CPU, batch 1, {label} (p90)", "value": round(p90, 2), "unit": "ms",
                     **common})
    return rows


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv, options={"model": {"default": DEFAULT_MODEL}})


if __name__ == "__main__":
    sys.exit(main())
