"""The inference server as a real subprocess on real loopback sockets: protocol (through NVIDIA's
tritonclient), security, limits, failures and lifecycle."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.server_fixtures import (ROOT, ServerProcess, real_model, runner, server,  # noqa: F401
                                   slow_model, stand_in_model, triton_client, triton_inputs)

RNG = np.random.default_rng(7)


def _images(n=1):
    return RNG.integers(0, 256, (n, 160, 160, 3), dtype=np.uint8), np.full((n, 160, 160), 128, np.uint8)


def _raw(server, data: bytes, timeout=5.0, half_close=False) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or the timeout)."""
    s = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)
    finally:
        s.close()


def _head(server, path, token=None, extra=b"", length=None, body=b""):
    h = f"POST {path} HTTP/1.1\r\nHost: x\r\n"
    if token:
        h += f"Authorization: Bearer {token}\r\n"
    if length is not None:
        h += f"Content-Length: {length}\r\n"
    return h.encode() + extra + b"\r\n" + body


# --- protocol through tritonclient -----------------------------------------------------------


def test_handshake_is_one_json_line(server):
    hs = json.loads(server.handshake_line)
    assert set(hs) == {"url", "token"}
    assert hs["url"].startswith("http://127.0.0.1:") and len(hs["token"]) >= 32


def test_tritonclient_health_and_metadata(server):
    c = triton_client(server)
    assert c.is_server_live(headers=server.auth)
    assert c.is_server_ready(headers=server.auth)
    assert c.is_model_ready("dualpm", headers=server.auth)
    assert "binary_tensor_data" in c.get_server_metadata(headers=server.auth)["extensions"]
    meta = c.get_model_metadata("dualpm", headers=server.auth)
    assert meta["name"] == "dualpm" and meta["platform"] == "onnxruntime_onnx"
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "image": ("UINT8", [-1, 160, 160, 3]), "mask": ("UINT8", [-1, 160, 160])}
    assert {o["name"] for o in meta["outputs"]} == {"P", "Q", "occupancy", "confidence"}
    assert meta["parameters"]["execution_providers"][-1] == "CPUExecutionProvider"
    assert meta["parameters"]["input_size"] == "160"


def test_tritonclient_binary_inference_matches_in_process(server, runner):
    import tritonclient.http as th

    image, mask = _images(2)
    mask[1] = 255
    c = triton_client(server)
    outs = [th.InferRequestedOutput(n, binary_data=True) for n in ("P", "Q", "occupancy", "confidence")]
    r = c.infer("dualpm", triton_inputs(image, mask), outputs=outs, headers=dict(server.auth), request_id="r1")
    want = runner.run({"image": image, "mask": mask})
    assert r.get_response()["id"] == "r1"
    for name in want:
        got = r.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == want[name].shape
        np.testing.assert_array_equal(got, want[name])
    assert np.all(r.as_numpy("occupancy")[1, 0] > 0.99)  # the mask input is honoured


def test_tritonclient_json_inference(server, runner):
    import tritonclient.http as th

    image, mask = _images(1)
    c = triton_client(server)
    r = c.infer("dualpm", triton_inputs(image, mask, binary=False),
                outputs=[th.InferRequestedOutput("occupancy", binary_data=False)], headers=dict(server.auth))
    assert [o["name"] for o in r.get_response()["outputs"]] == ["occupancy"]
    np.testing.assert_allclose(r.as_numpy("occupancy"), runner.run({"image": image, "mask": mask})["occupancy"],
                               rtol=1e-6)


def test_all_outputs_binary_when_none_requested(server):
    image, mask = _images(1)
    r = triton_client(server).infer("dualpm", triton_inputs(image, mask), headers=dict(server.auth))
    assert [o["name"] for o in r.get_response()["outputs"]] == ["P", "Q", "occupancy", "confidence"]
    assert all("binary_data_size" in o["parameters"] for o in r.get_response()["outputs"])


# --- security --------------------------------------------------------------------------------


def test_binds_loopback_only(server):
    # The listening socket is bound to 127.0.0.1 itself, not a wildcard address...
    hexport = f"{server.port:04X}"
    with open("/proc/net/tcp") as f:
        listening = [line.split()[1] for line in f if line.split()[3] == "0A" and line.split()[1].endswith(":" + hexport)]
    assert listening == ["0100007F:" + hexport]
    # ...so another address of this machine (127.0.0.2, also loopback) is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", server.port), timeout=2).close()


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_missing_or_wrong_token_is_401(server, auth):
    import http.client

    for method, path in (("GET", "/v2/health/live"), ("GET", "/v2/models/dualpm"), ("POST", "/v2/models/dualpm/infer")):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request(method, path, body=b"{}" if method == "POST" else None,
                     headers={"Authorization": auth} if auth else {})
        r = conn.getresponse()
        assert r.status == 401, (method, path)
        assert r.getheader("WWW-Authenticate") == "Bearer"
        assert "token" in json.loads(r.read())["error"]
        conn.close()


def test_tritonclient_without_token_is_refused(server):
    from tritonclient.utils import InferenceServerException

    c = triton_client(server)
    assert not c.is_server_live()  # 401 reads as "not live"
    image, mask = _images(1)
    with pytest.raises(InferenceServerException) as e:
        c.infer("dualpm", triton_inputs(image, mask))
    assert e.value.status() == "401"


# --- limits and bad requests -----------------------------------------------------------------


def test_oversize_body_is_413_without_reading_it(server):
    t = time.monotonic()
    # 1 GiB announced, 10 bytes sent: the answer must come without waiting for the rest.
    answer = _raw(server, _head(server, "/v2/models/dualpm/infer", server.token, length=1 << 30, body=b"0123456789"))
    assert time.monotonic() - t < 4.0
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"Connection: close" in rest
    assert "exceeds the limit" in json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]


def test_missing_content_length_is_411(server):
    answer = _raw(server, _head(server, "/v2/models/dualpm/infer", server.token, extra=b"Transfer-Encoding: chunked\r\n"))
    assert answer.startswith(b"HTTP/1.1 411")


def test_compressed_request_is_415(server):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    image, mask = _images(1)
    with pytest.raises(InferenceServerException) as e:
        triton_client(server).infer("dualpm", triton_inputs(image, mask), headers=dict(server.auth),
                                    outputs=[th.InferRequestedOutput("occupancy")],
                                    request_compression_algorithm="gzip")
    assert e.value.status() == "415" and "Content-Encoding gzip is not supported" in e.value.message()


@pytest.mark.parametrize("case,reason", [
    ("name", "unknown input 'imgae'; the model's inputs are image, mask"),
    ("shape", "input 'image' has shape [1, 100, 100, 3], expected [N, 160, 160, 3]"),
    ("datatype", "input 'image' has datatype FP32, expected UINT8"),
    ("missing", "missing input 'mask'"),
    ("batch", "input 'mask' has batch size 2, but 'image' has 1"),
])
def test_bad_tensors_are_400_with_the_reason(server, case, reason):
    from tritonclient.utils import InferenceServerException

    image, mask = _images(1)
    kw = {}
    if case == "name":
        kw["names"] = ("imgae", "mask")
    elif case == "shape":
        image = image[:, :100, :100]
    elif case == "datatype":
        image = image.astype(np.float32)
        kw["datatypes"] = ("FP32", "UINT8")
    elif case == "batch":
        mask = np.concatenate([mask, mask])
    inputs = triton_inputs(image, mask, **kw)
    if case == "missing":
        inputs = inputs[:1]
    with pytest.raises(InferenceServerException) as e:
        triton_client(server).infer("dualpm", inputs, headers=dict(server.auth))
    assert e.value.status() == "400"
    assert reason in e.value.message()


def test_unknown_output_and_oversize_batch_are_400(server):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    c = triton_client(server)
    image, mask = _images(1)
    with pytest.raises(InferenceServerException) as e:
        c.infer("dualpm", triton_inputs(image, mask), outputs=[th.InferRequestedOutput("normals")],
                headers=dict(server.auth))
    assert e.value.status() == "400" and "unknown output 'normals'" in e.value.message()
    image, mask = _images(9)
    with pytest.raises(InferenceServerException) as e:
        c.infer("dualpm", triton_inputs(image, mask), headers=dict(server.auth))
    assert e.value.status() == "400" and "limit of 8" in e.value.message()


def test_unknown_model_is_404(server):
    from tritonclient.utils import InferenceServerException

    c = triton_client(server)
    with pytest.raises(InferenceServerException) as e:
        c.get_model_metadata("horse", headers=server.auth)
    assert e.value.status() == "404" and "unknown model 'horse'" in e.value.message()
    image, mask = _images(1)
    with pytest.raises(InferenceServerException) as e:
        c.infer("horse", triton_inputs(image, mask), headers=dict(server.auth))
    assert e.value.status() == "404"
    assert not c.is_model_ready("horse", headers=server.auth)
    assert server.request("GET", "/v3/anything")[0] == 404


def test_garbage_bytes_are_400_and_the_server_goes_on(server):
    garbage = bytes(RNG.integers(0, 256, 3000, dtype=np.uint8)).replace(b"\n", b"") + b"\r\n\r\n"
    answer = _raw(server, garbage)
    assert answer.startswith(b"HTTP/1.1 400")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    # a well-formed request whose body is garbage
    body = bytes(RNG.integers(0, 256, 500, dtype=np.uint8))
    status, _, data = server.request("POST", "/v2/models/dualpm/infer", body=body)
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    status, _, data = server.request("POST", "/v2/models/dualpm/infer", body=b"{}",
                                     headers={"Inference-Header-Content-Length": "999"})
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(data)["error"]
    status, _, data = server.request("POST", "/v2/models/dualpm/infer", body=json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 160, 160, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}).encode())
    assert status == 400 and "'data' has 3 values" in json.loads(data)["error"]
    assert server.request("GET", "/v2/health/ready")[0] == 200


def test_slow_client_does_not_block_others(server, runner):
    from dualpm_addon.client import InferenceClient

    slow = []
    for _ in range(3):  # slowloris: half a body, and a request line never finished
        s = socket.create_connection((server.host, server.port))
        s.sendall(_head(server, "/v2/models/dualpm/infer", server.token, length=200000, body=b"{" * 1000))
        slow.append(s)
    s = socket.create_connection((server.host, server.port))
    s.sendall(b"GET /v2/health/li")
    slow.append(s)
    try:
        c = InferenceClient(url=server.url, token=server.token).start()
        image, _ = _images(1)
        t = time.monotonic()
        for _ in range(3):
            out = c.predict(image[0])
        assert time.monotonic() - t < 5.0
        np.testing.assert_array_equal(out["P"], runner.predict(image[0])["P"])
    finally:
        for s in slow:
            s.close()


def test_fifty_concurrent_requests_all_answered_memory_bounded(server, runner):
    import tritonclient.http as th

    image, mask = _images(50)
    want = runner.run({"image": image, "mask": mask})["occupancy"]
    c = triton_client(server, concurrency=50, connection_timeout=120, network_timeout=120)
    warm = c.infer("dualpm", triton_inputs(image[:1], mask[:1]), headers=dict(server.auth))
    assert warm.as_numpy("P").shape == (1, 4, 160, 160, 3)
    base = server.rss_kb()
    for _ in range(2):  # twice: a leak would show as growth between rounds
        pending = [c.async_infer("dualpm", triton_inputs(image[i:i + 1], mask[i:i + 1]), headers=dict(server.auth),
                                 request_id=str(i), outputs=[th.InferRequestedOutput(n) for n in ("P", "occupancy")])
                   for i in range(50)]
        for i, p in enumerate(pending):
            r = p.get_result(timeout=120)
            assert r.get_response()["id"] == str(i)
            np.testing.assert_array_equal(r.as_numpy("occupancy")[0], want[i])
        peak = server.rss_kb("VmHWM")
    c.close()
    # At most 8 requests hold data at once (about 3.4 MB each): growth stays far below 50 x 3.4 MB
    # of responses plus ORT's own working memory.
    assert (peak - base) / 1024 < 150, f"server peak RSS grew {(peak - base) / 1024:.0f} MiB"
    assert (server.rss_kb() - base) / 1024 < 100


def test_connection_limit_answers_503(stand_in_model):
    s = ServerProcess(stand_in_model, "--max-connections", "2")
    try:
        held = [socket.create_connection((s.host, s.port)) for _ in range(2)]
        # Until the server has taken both in and let go of its readiness poller's connection;
        # short attempts, so one that waits in the listen backlog cannot use up the whole window.
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                answer = _raw(s, b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n", timeout=1.0)
            except ConnectionResetError:
                answer = b"(reset)"
            if answer.startswith(b"HTTP/1.1 503"):
                break
            # A held connection accepted while the poller's still had its slot was itself refused
            # (the server has answered it and closed): open it again.
            for i, h in enumerate(held):
                if select.select([h], [], [], 0)[0]:
                    h.close()
                    held[i] = socket.create_connection((s.host, s.port))
            time.sleep(0.1)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer, answer[:300]
        for h in held:
            h.close()
        time.sleep(0.3)
        assert s.request("GET", "/v2/health/live")[0] == 200
    finally:
        s.stop()


# --- timeouts and lifecycle ------------------------------------------------------------------


def test_request_timeout_terminates_the_run_with_504(slow_model):
    s = ServerProcess(slow_model, "--request-timeout", "0.1")
    try:
        image, mask = _images(1)
        from dualpm_addon.client import _encode_request

        body, headers = _encode_request({"image": image, "mask": mask}, ("P",))
        t = time.monotonic()
        status, _, data = s.request("POST", "/v2/models/dualpm/infer", body=body, headers=headers)
        assert status in (503, 504), data
        assert "within 0.1 s" in json.loads(data)["error"]
        assert time.monotonic() - t < 3.0
    finally:
        s.stop()


def test_sigterm_finishes_the_running_request_then_exits_0(slow_model):
    from dualpm_addon.client import InferenceClient

    s = ServerProcess(slow_model, "--verbose")
    c = InferenceClient(url=s.url, token=s.token).start()
    result = {}

    def go():
        try:
            result["out"] = c.predict(_images(1)[0][0])
        except Exception as e:  # noqa: BLE001 - reported below
            result["err"] = e

    t = threading.Thread(target=go)
    t.start()
    end = time.monotonic() + 20
    while not any(line.endswith(": running") for line in list(s.stderr)) and time.monotonic() < end:
        time.sleep(0.005)
    assert s.stop(signal.SIGTERM) == 0
    t.join(10)
    assert "out" in result, result
    assert any("stopping: signal SIGTERM" in line for line in s.stderr)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, s.port), timeout=2).close()
    assert s.proc.stdout.read() == b""  # nothing but the handshake on stdout, ever


def test_idle_timeout_exits(stand_in_model):
    s = ServerProcess(stand_in_model, "--idle-timeout", "0.5")
    assert s.proc.wait(10) == 0
    assert any("idle for 0.5 s" in line for line in s.stderr)


def test_exits_when_its_parent_dies(stand_in_model, tmp_path):
    pidfile = tmp_path / "pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
p = subprocess.Popen([sys.executable, '-m', 'model_server', '--model', {stand_in_model!r}],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd={ROOT!r})
p.stdout.readline()
open({str(pidfile)!r}, 'w').write(str(p.pid))
time.sleep(60)
"""], cwd=ROOT)
    try:
        end = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < end:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        parent.kill()
        parent.wait()
        end = time.monotonic() + 10
        while time.monotonic() < end and os.path.exists(f"/proc/{pid}") and "Z" not in _proc_state(pid):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}") or "Z" in _proc_state(pid), "server outlived its parent"
    finally:
        parent.kill()


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_bad_model_exits_3_with_the_reason(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    p = subprocess.run([sys.executable, "-m", "model_server", "--model", str(bad)], cwd=ROOT,
                       capture_output=True, timeout=30)
    assert p.returncode == 3
    assert len(p.stdout.splitlines()) == 1 and json.loads(p.stdout)["url"]
    assert "error: model bad.onnx: ONNX Runtime cannot load it" in p.stderr.decode().strip().splitlines()[-1]
    p = subprocess.run([sys.executable, "-m", "model_server", "--model", str(tmp_path / "none.onnx")], cwd=ROOT,
                       capture_output=True, timeout=30)
    assert p.returncode == 2 and p.stdout == b"" and "no such file" in p.stderr.decode()


def test_token_from_environment(stand_in_model):
    s = ServerProcess(stand_in_model, env={"DUALPM_SERVER_TOKEN": "studio-secret-0123456789"})
    try:
        assert s.token == "studio-secret-0123456789"
        assert s.request("GET", "/v2/health/live")[0] == 200
    finally:
        s.stop()


def test_real_model_serves_the_contract(real_model):
    s = ServerProcess(real_model, start_timeout=120)
    try:
        image, mask = _images(1)
        r = triton_client(s).infer("dualpm", triton_inputs(image, mask), headers=dict(s.auth))
        assert r.as_numpy("P").shape == (1, 4, 160, 160, 3)
        occ = r.as_numpy("occupancy")
        assert occ.min() >= 0 and occ.max() <= 1 and r.as_numpy("confidence").min() >= 1
    finally:
        s.stop()


@pytest.mark.slow
def test_benchmark_reports_the_overhead():
    from benchmarks import bench_server

    rows = {r["name"]: r for r in bench_server.run(quick=True)}
    over = rows["server overhead over in-process"]
    assert over["unit"] == "ms" and over["limit"] == 10.0 and f"{os.cpu_count()}-core" in over["machine"]
    # the acceptance figure is recorded in docs/server.md; here only a sanity bound on a busy machine
    assert 0 < rows["server round trip, dualpm client, binary (median)"]["value"] < 1000
    assert over["value"] < 50
