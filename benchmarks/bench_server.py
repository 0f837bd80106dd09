"""Round-trip overhead of the inference server over in-process ONNX Runtime, 160x160, batch 1.

Both are measured in the same run, interleaved request by request so that a busy machine slows
both alike; the figure is the difference of the medians. The server is started the way the
extension starts it (dualpm_addon.client, binary tensors, loopback); the same server is also
timed through NVIDIA's tritonclient. The model is assets/dualpm.onnx when it exists, else the
stand-in model with the same tensors (the overhead depends on the tensors' sizes, not on what
the model computes).

    python benchmarks/bench_server.py [--quick] [--json FILE]
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
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LIMIT_MS = 10.0


def _model(tmp: str) -> tuple[str, str]:
    real = os.path.join(ROOT, "assets", "dualpm.onnx")
    if os.path.isfile(real):
        return real, "assets/dualpm.onnx"
    from model_server import stand_in

    return stand_in.build(os.path.join(tmp, "stand_in.onnx")), "stand-in (model_server/stand_in.py)"


def run(quick: bool = False) -> list[dict]:
    from dualpm_addon.client import HEADER_LENGTH, InferenceClient, _decode_response, _encode_request
    from dualpm_addon.inference import OUTPUTS, Runner

    n = 15 if quick else 60
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    mask = np.full((1, 160, 160), 128, np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        model, model_name = _model(tmp)
        runner = Runner(model)
        client = InferenceClient(model=model).start()
        try:
            import tritonclient.http as th
        except ImportError:
            th = None
        try:
            if th is not None:
                tc = th.InferenceServerClient(client.url.split("//", 1)[1])
                auth = {"Authorization": f"Bearer {client.token}"}

                def triton_once():
                    inputs = []
                    for name, arr in (("image", image[None]), ("mask", mask)):
                        t = th.InferInput(name, list(arr.shape), "UINT8")
                        t.set_data_from_numpy(arr, binary_data=True)
                        inputs.append(t)
                    return tc.infer("dualpm", inputs, headers=dict(auth))

            inproc, rt, tri, server_http = [], [], [], []
            for i in range(n + 5):
                t = time.perf_counter()
                runner.predict(image)
                a = time.perf_counter() - t
                t = time.perf_counter()
                client.predict(image)
                b = time.perf_counter() - t
                # the same request by hand, to read the server's own timing header
                body, headers = _encode_request({"image": image[None], "mask": mask}, OUTPUTS)
                _, h, rb = client._request("POST", "/v2/models/dualpm/infer", body, headers, timeout=60)
                _decode_response(rb, h.get(HEADER_LENGTH))
                timing = dict(p.strip().split(";dur=") for p in h["Server-Timing"].split(","))
                c = None
                if th is not None:
                    t = time.perf_counter()
                    triton_once()
                    c = time.perf_counter() - t
                if i >= 5:  # warm-up done
                    inproc.append(a)
                    rt.append(b)
                    server_http.append((float(timing["handler"]) - float(timing["run"])) / 1e3)
                    if c is not None:
                        tri.append(c)
        finally:
            client.close()
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    base = ms(inproc)
    overhead = ms(rt) - base
    common = {"model": model_name, "machine": machine(), "samples": n}
    rows = [
        {"name": "in-process onnxruntime, 160x160, N=1 (median)", "value": round(base, 3), "unit": "ms", **common},
        {"name": "server round trip, dualpm client, binary (median)", "value": round(ms(rt), 3), "unit": "ms",
         "peer": "in-process onnxruntime", "peer_value": round(base, 3), "ratio": round(ms(rt) / base, 3), **common},
        {"name": "server overhead over in-process", "value": round(overhead, 3), "unit": "ms",
         "limit": LIMIT_MS, "pass": overhead <= LIMIT_MS, **common},
        {"name": "server-side HTTP handling before the reply (median)", "value": round(ms(server_http), 3),
         "unit": "ms", **common},
    ]
    if tri:
        rows.append({"name": "server round trip, tritonclient, binary (median)", "value": round(ms(tri), 3),
                     "unit": "ms", "peer": "in-process onnxruntime", "peer_value": round(base, 3),
                     "ratio": round(ms(tri) / base, 3), **common})
    return rows


def machine() -> str:
    cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import onnxruntime

    return f"{cores}-core {cpu}, {platform.system()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
