"""The inference client against real server subprocesses: start, handshake, readiness, inference,
crash and restart, cancel, remote attach, and start failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dualpm_addon.client import InferenceCancelled, InferenceClient, describe_exit
from dualpm_addon.errors import DualPMError
from tests.server_fixtures import (ROOT, ServerProcess, blob_photo, runner, server,  # noqa: F401
                                   slow_model, stand_in_model)

IMAGE = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def local(stand_in_model):
    with InferenceClient(model=stand_in_model, device="cpu") as c:
        yield c


def _wait_running(c: InferenceClient, timeout: float = 20.0):
    """Until the (--verbose) server has logged that the run of a request started."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(line.endswith(": running") for line in list(c.server.stderr_tail)[-3:]):
            return
        time.sleep(0.005)
    raise AssertionError("the request never started running")


def _in_thread(fn):
    result = {}

    def go():
        try:
            result["out"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["err"] = e

    t = threading.Thread(target=go)
    t.start()
    return t, result


def test_client_imports_only_stdlib_and_numpy():
    code = ("import sys; before = set(sys.modules); import dualpm_addon.client; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "bad = sorted(m for m in new if m not in sys.stdlib_module_names and m not in ('numpy', 'dualpm_addon') "
            "and not m.startswith('_') and m != 'cython_runtime'); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def assert_same_prediction(got, want):
    """The wire carries float32 losslessly, but ONNX Runtime may split a batch of two, or run
    with another thread count, differently from the in-process call, which reorders float sums
    on some CPUs: equal within 1e-5 (metres for P and Q; a float16 or rounding bug in transport
    is 1e-3 or more)."""
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_local_server_predicts_like_in_process(local, runner):
    assert local.server.alive() and local.url.startswith("http://127.0.0.1:")
    assert local.providers == ["CPUExecutionProvider"] and local.input_size == 160
    mask = np.zeros((160, 160), bool)
    mask[40:120, 30:100] = True
    got, want = local.predict(IMAGE, mask), runner.predict(IMAGE, mask)
    assert set(got) == {"P", "Q", "occupancy", "confidence"}
    for k in want:
        assert got[k].dtype == np.float32 and got[k].flags.writeable
        assert_same_prediction(got[k], want[k])
    batch = local.predict(np.stack([IMAGE, IMAGE[::-1]]))
    assert batch["P"].shape == (2, 4, 160, 160, 3)
    assert_same_prediction(batch["Q"][1], runner.predict(IMAGE[::-1])["Q"])


def test_preprocess_runs_through_the_client(local, runner):
    from dualpm_addon import preprocess

    photo = blob_photo()
    a = preprocess.predict_photo(local, photo, source="blob.png")
    b = preprocess.predict_photo(runner, photo, source="blob.png")
    np.testing.assert_array_equal(a["crop_box"], b["crop_box"])
    assert_same_prediction(a["P"], b["P"])


def test_server_errors_are_one_line(local):
    with pytest.raises(DualPMError, match=r"inference server: input 'image' has shape \[1, 100, 100, 3\], "
                                          r"expected \[N, 160, 160, 3\] \(HTTP 400\)"):
        local.predict(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DualPMError, match=r"inference server: batch size 9 exceeds this server's limit of 8 \(HTTP 400\)"):
        local.predict(np.zeros((9, 160, 160, 3), np.uint8))
    assert local.predict(IMAGE)["P"].shape == (4, 160, 160, 3)  # and it goes on


def test_sigkill_mid_request_is_reported_and_the_next_request_runs_on_a_new_server(slow_model, runner):
    with InferenceClient(model=slow_model, server_args=("--verbose",)) as c:
        first_pid = c.server.proc.pid
        t, result = _in_thread(lambda: c.predict(IMAGE))
        _wait_running(c)
        os.kill(first_pid, signal.SIGKILL)
        t.join(30)
        err = result.get("err")
        assert isinstance(err, DualPMError), result
        assert str(err) == "inference server exited with signal 9 (SIGKILL) during the request; restarted it"
        assert c.server.proc.pid != first_pid and c.server.alive() and c.restarts == 1
        out = c.predict(IMAGE)
        np.testing.assert_allclose(out["occupancy"], runner.predict(IMAGE)["occupancy"], atol=1e-6)


def test_second_crash_in_a_row_is_not_restarted(slow_model):
    with InferenceClient(model=slow_model, server_args=("--verbose",)) as c:
        for attempt in range(2):
            pid = c.server.proc.pid
            t, result = _in_thread(lambda: c.predict(IMAGE))
            _wait_running(c)
            os.kill(pid, signal.SIGKILL)
            t.join(30)
        assert "during the request again; not restarting it" in str(result["err"])
        assert not c.server.alive()


def test_crash_while_idle_restarts_before_the_request(stand_in_model):
    with InferenceClient(model=stand_in_model) as c:
        pid = c.server.proc.pid
        os.kill(pid, signal.SIGKILL)
        c.server.wait(5)
        assert c.predict(IMAGE)["P"].shape == (4, 160, 160, 3)
        assert c.server.proc.pid != pid
        assert c.last_crash.startswith("inference server exited with signal 9 (SIGKILL) while idle")


def test_idle_exit_restarts_silently(stand_in_model):
    with InferenceClient(model=stand_in_model, idle_timeout=0.5) as c:
        pid = c.server.proc.pid
        assert c.server.wait(10) == 0  # it stopped by itself
        assert c.predict(IMAGE)["P"].shape == (4, 160, 160, 3)
        assert c.server.proc.pid != pid and c.last_crash is None


def test_cancel_returns_promptly(slow_model):
    with InferenceClient(model=slow_model, server_args=("--verbose",)) as c:
        t, result = _in_thread(lambda: c.predict(IMAGE))
        _wait_running(c)
        t0 = time.monotonic()
        c.cancel()
        t.join(10)
        assert time.monotonic() - t0 < 0.5
        assert isinstance(result.get("err"), InferenceCancelled), result
        assert c.predict(IMAGE)["P"].shape == (4, 160, 160, 3)  # the next request is unaffected
        assert c.restarts == 0


def test_attach_to_a_remote_server(server, runner):
    c = InferenceClient(url=server.url, token=server.token).start()
    assert c.server is None
    assert_same_prediction(c.predict(IMAGE)["P"], runner.predict(IMAGE)["P"])
    with pytest.raises(DualPMError, match=r"refused the token \(HTTP 401\)"):
        InferenceClient(url=server.url, token="wrong").start()
    with pytest.raises(DualPMError, match="unknown model 'cat'"):
        InferenceClient(url=server.url, token=server.token, model_name="cat").start()


def test_remote_server_gone(stand_in_model):
    s = ServerProcess(stand_in_model)
    c = InferenceClient(url=s.url, token=s.token, start_timeout=1).start()
    s.stop()
    with pytest.raises(DualPMError, match=r"lost the connection to the inference server at http://127\.0\.0\.1"):
        c.predict(IMAGE)


def test_start_failures_name_the_cause(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(DualPMError) as e:
        InferenceClient(model=str(bad)).start()
    assert str(e.value).startswith("inference server exited with code 3 before it was ready: ")
    assert "bad.onnx: ONNX Runtime cannot load it" in str(e.value)

    with pytest.raises(DualPMError, match=r"exited with code 2 before it started: .*none\.onnx: no such file"):
        InferenceClient(model=str(tmp_path / "none.onnx")).start()

    with pytest.raises(DualPMError, match="cannot start the inference server with /no/such/python"):
        InferenceClient(python="/no/such/python").start()


def test_spawn_starts_only_the_process_and_the_first_request_finishes_the_start(stand_in_model):
    # `dualpm reconstruct` spawns before it imports bpy, where no thread may run (client.py)
    threads = threading.active_count()
    c = InferenceClient(model=stand_in_model).spawn()
    try:
        assert threading.active_count() == threads
        assert c.server.alive() and not c.server.handshaken and c.metadata is None
        assert c.spawn().server is c.server  # a second spawn keeps it
        assert c.predict(IMAGE)["P"].shape == (4, 160, 160, 3)
        assert c.server.handshaken and c.restarts == 0
    finally:
        c.close()


def test_a_spawned_server_that_fails_before_the_handshake_reports_it_as_start_does(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    c = InferenceClient(model=str(tmp_path / "none.onnx")).spawn()
    assert c.server.wait(30) == 2  # long dead, its output unread, when the handshake begins
    with pytest.raises(DualPMError) as e:
        c.start()
    assert str(e.value).startswith("inference server exited with code 2 before it started: ")
    assert str(e.value).endswith("none.onnx: no such file")
    assert "\n" not in str(e.value) and c.server is None

    c = InferenceClient(model=str(bad)).spawn()
    c.server.wait(30)
    with pytest.raises(DualPMError) as e:
        c.predict(IMAGE)
    assert str(e.value).startswith("inference server exited with code 3 before it was ready: ")
    assert "bad.onnx: ONNX Runtime cannot load it" in str(e.value)

    c = InferenceClient(python="/no/such/python").spawn()  # spawn never raises; start says why
    assert c.server is None
    with pytest.raises(DualPMError, match="cannot start the inference server with /no/such/python"):
        c.start()


def test_closing_a_spawned_server_never_started_ends_it_at_once(stand_in_model):
    c = InferenceClient(model=stand_in_model).spawn()
    proc = c.server.proc
    t = time.monotonic()
    c.close()
    assert proc.poll() is not None and time.monotonic() - t < 2.5
    assert c.server is None


def test_start_timeout_names_the_last_stderr_line(tmp_path):
    fake = tmp_path / "python"  # a real executable that never hands shake
    fake.write_text("#!/bin/sh\necho 'loading CUDA kernels...' >&2\nexec sleep 30\n")
    fake.chmod(0o755)
    t = time.monotonic()
    with pytest.raises(DualPMError) as e:
        InferenceClient(python=str(fake), start_timeout=1).start()
    assert str(e.value) == "server did not start within 1 s: loading CUDA kernels..."
    assert time.monotonic() - t < 8


def test_server_exits_when_the_client_process_dies(stand_in_model):
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from dualpm_addon.client import InferenceClient; "
            f"c = InferenceClient(model={stand_in_model!r}).start(); print(c.server.proc.pid, flush=True); "
            "import time; time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        pid = int(p.stdout.readline())
        p.kill()
        p.wait()
        end = time.monotonic() + 10
        while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}"), "server outlived the client's process"
    finally:
        p.kill()


def test_describe_exit():
    assert describe_exit(-9) == "exited with signal 9 (SIGKILL)"
    assert describe_exit(3) == "exited with code 3"
