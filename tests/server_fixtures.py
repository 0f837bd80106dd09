"""Fixtures for the inference server, client, cropping and runner tests (import them where needed).

The trained model may not exist yet, so tests use the stand-in model of model_server/stand_in.py:
a real ONNX model with the contract's exact tensors, whose "animal" is what differs in colour
from the photo's border. `real_model` is assets/dualpm.onnx when present (contract smoke tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, ".cache", "photos")
REAL_MODEL = os.path.join(ROOT, "assets", "dualpm.onnx")


def photo(name: str) -> str:
    path = os.path.join(PHOTOS, name)
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (scripts/data/photos.sh) first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def stand_in_model(tmp_path_factory) -> str:
    from model_server import stand_in

    return stand_in.build(str(tmp_path_factory.mktemp("models") / "stand_in.onnx"))


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory) -> str:
    """The stand-in with busy work: one run takes about 0.3 s on a quiet 2-core machine (more
    under load), well past the 0.1 s timeouts and kill windows the tests rely on. (24 layers
    took 56 ms on a quiet machine: the timeout test then passed only when the machine was busy.)"""
    from model_server import stand_in

    return stand_in.build(str(tmp_path_factory.mktemp("models") / "slow.onnx"), work=120)


@pytest.fixture(scope="session")
def real_model() -> str:
    if not os.path.isfile(REAL_MODEL):
        pytest.skip("assets/dualpm.onnx is not there yet (issue 4 trains it)")
    return REAL_MODEL


@pytest.fixture(scope="session")
def runner(stand_in_model):
    from dualpm_addon.inference import Runner

    return Runner(stand_in_model, device="cpu")


def blob_photo(h=600, w=900, box=(500, 150, 800, 400), fg=(60, 40, 30), bg=(200, 210, 220)) -> np.ndarray:
    """A light photo with a dark ellipse filling `box` (x0, y0, x1, y1): an 'animal' for the stand-in."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    inside = ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1
    img[inside] = fg
    return img


class ServerProcess:
    """`python -m model_server` as a real subprocess; its handshake, stderr and exit."""

    def __init__(self, model: str, *args: str, env: dict | None = None, start_timeout: float = 30.0):
        e = dict(os.environ)
        e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "model_server", "--model", model, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=ROOT, env=e)
        self.stderr: deque = deque(maxlen=200)
        threading.Thread(target=self._drain, daemon=True).start()
        line = self.proc.stdout.readline().decode()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(f"server exited {self.proc.returncode}: {list(self.stderr)}")
        self.handshake_line = line
        hs = json.loads(line)
        self.url, self.token = hs["url"], hs["token"]
        self.host, self.port = self.url.split("//")[1].rsplit(":", 1)
        self.port = int(self.port)
        self.wait_ready(start_timeout)

    def _drain(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={**self.auth, **(headers or {})})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.request("GET", "/v2/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {list(self.stderr)}")
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def rss_kb(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture(scope="module")
def server(stand_in_model):
    s = ServerProcess(stand_in_model)
    yield s
    s.stop()


def triton_client(server: ServerProcess, **kw):
    import tritonclient.http as th

    return th.InferenceServerClient(f"{server.host}:{server.port}", **kw)


def triton_inputs(image: np.ndarray, mask: np.ndarray, binary: bool = True, names=("image", "mask"),
                  datatypes=("UINT8", "UINT8")):
    import tritonclient.http as th

    out = []
    for name, arr, dt in zip(names, (image, mask), datatypes):
        t = th.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out
