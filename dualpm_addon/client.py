"""Client of the DualPM inference server (KServe v2 over HTTP): standard library + numpy only,
because it runs inside Blender's own Python.

    with InferenceClient() as c:                      # starts `python -m model_server` locally
        maps = c.predict(crop_uint8, mask_uint8)      # same interface as inference.Runner
    c = InferenceClient(url="http://gpu-box:8000", token="...")   # or attach to a running server
                                                                  # (ours, or NVIDIA Triton)

Local mode starts the server with a chosen Python (default sys.executable: Blender's own Python
inside Blender), reads its one-line JSON handshake from stdout, waits for /v2/health/ready, and
keeps the process's stdin as a pipe (the server exits when it closes, i.e. when this process
dies). Inference uses the binary tensor data extension. If the server dies during a request,
the request fails with a one-line DualPMError that says how (exit code or signal, and the last
stderr line), the server is restarted once, and the next request runs on the new one; a second
crash in a row is reported without another restart. A server that exited on its own between
requests (idle timeout) is restarted silently. `cancel()` (from any thread) makes the request in
progress raise InferenceCancelled promptly by shutting its socket down.

`spawn()` starts the local server's process and returns at once (a `subprocess.Popen` in the
calling thread: no threads, no HTTP); the next `start()` or request reads its handshake and
waits until it is ready. A caller with slow work of its own (`dualpm reconstruct` importing bpy,
~1 s) spawns first, so the server starts on another core meanwhile. Nothing of the client may
run in a thread while bpy imports: a thread's lazy import (`encodings.idna` for an HTTP
connection) against bpy's extension module import deadlocked the process, so the pipe readers
start with the handshake (the pipes hold 64 KB, far more than the server writes before it).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from urllib.parse import urlsplit

import numpy as np

from .errors import DualPMError
from .inference import OUTPUTS, as_batch

MODEL_NAME = "dualpm"
HEADER_LENGTH = "Inference-Header-Content-Length"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REUSE_LIMIT_S = 10.0  # reopen connections idle longer than this (the server drops idle ones)
_DTYPES = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16, "FP32": np.float32,
           "FP64": np.float64, "BOOL": np.bool_}


class InferenceCancelled(DualPMError):
    """The request was cancelled with InferenceClient.cancel()."""


class _ConnectionLost(Exception):
    pass


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'exited with signal 9 (SIGKILL)'."""
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"exited with signal {-returncode}{name}"
    return f"exited with code {returncode}"


class _NoDelayConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayTLSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# The pipe readers' thread names: they only wait in a read on the server's pipes, so a forked
# copy of this process made beside them is safe (video/forked.allowed).
PIPE_READERS = ("dualpm-server-stdout", "dualpm-server-stderr")


class LocalServer:
    """A `python -m model_server` subprocess and what it said."""

    def __init__(self, python: str, args: list[str], start_timeout: float | None = None,
                 cancelled: threading.Event | None = None):
        """Spawn the process; with `start_timeout`, also read its handshake (handshake())."""
        self.stderr_tail: deque = deque(maxlen=40)
        self.url: str | None = None  # None until the handshake
        self.token: str | None = None
        self._readers: list[threading.Thread] = []
        cmd = [python, "-m", "model_server", "--port", "0", "--watch-stdin", *args]
        env = dict(os.environ)
        paths = [_ROOT]
        if os.path.realpath(python) == os.path.realpath(sys.executable):
            # The same interpreter: give it the same packages. Inside Blender, sys.path holds the
            # folders Blender adds at run time (extension wheels such as onnxruntime) that a bare
            # `python -m` would not see.
            paths += [p for p in sys.path if p and os.path.isdir(p) and p not in paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        kw = {}
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kw["start_new_session"] = True  # a Ctrl-C in Blender's terminal is not meant for it
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=_ROOT, env=env, **kw)
        except OSError as e:
            raise DualPMError(f"cannot start the inference server with {python}: {e.strerror or e}") from None
        self._finalizer = weakref.finalize(self, _stop_process, self.proc)
        self._lines: queue.Queue = queue.Queue()
        if start_timeout is not None:
            self.handshake(start_timeout, cancelled or threading.Event())

    @property
    def handshaken(self) -> bool:
        return self.url is not None

    def handshake(self, timeout: float, cancelled: threading.Event):
        """Start the pipe readers and wait for the one-line handshake (url, token)."""
        if not self._readers:
            self._readers = [threading.Thread(target=self._read_stdout, daemon=True, name=PIPE_READERS[0]),
                             threading.Thread(target=self._read_stderr, daemon=True, name=PIPE_READERS[1])]
            for t in self._readers:
                t.start()
        self.url, self.token = self._handshake(timeout, cancelled)

    def settle(self):
        """After the process exited: until the stderr reader has its last line (a server that died
        while nobody read its pipes has it all still buffered), at most 2 s."""
        if self.proc.poll() is not None and len(self._readers) == 2:
            self._readers[1].join(2.0)
        else:
            time.sleep(0.05)

    def _read_stdout(self):
        first = True
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if first:
                self._lines.put(line)
                first = False
            else:  # the server promises a single line; anything more is kept for diagnosis
                self.stderr_tail.append("stdout: " + line)
        self._lines.put(None)

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)

    def last_line(self) -> str:
        """The last stderr line, less the server's "dualpm-server: error: " prefix."""
        if not self.stderr_tail:
            return "no output on stderr"
        line = self.stderr_tail[-1]
        for prefix in ("dualpm-server: ", "error: "):
            line = line[len(prefix):] if line.startswith(prefix) else line
        return line

    def _handshake(self, timeout: float, cancelled: threading.Event):
        end = time.monotonic() + timeout
        while True:
            if cancelled.is_set():
                self.stop(graceful=False)
                raise InferenceCancelled("inference server start cancelled")
            try:
                line = self._lines.get(timeout=0.05)
            except queue.Empty:
                line = ""
            if line is None or (not line and self.proc.poll() is not None):
                rc = self.wait(2.0)
                self.settle()  # let the stderr reader catch the last line
                raise DualPMError(f"inference server {describe_exit(rc if rc is not None else -1)} "
                                  f"before it started: {self.last_line()}")
            if line:
                try:
                    hs = json.loads(line)
                    url, token = hs["url"], hs["token"]
                    if not isinstance(url, str) or not isinstance(token, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    self.stop(graceful=False)
                    raise DualPMError(f"inference server sent a bad handshake line: {line[:120]!r}") from None
                return url, token
            if time.monotonic() > end:
                self.stop(graceful=False)
                raise DualPMError(f"server did not start within {timeout:g} s: {self.last_line()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, graceful: bool = True):
        if not graceful and self.proc.poll() is None:  # it never started serving: nothing to finish
            self.proc.terminate()
        self._finalizer()


def _stop_process(proc: subprocess.Popen):
    """Close the pipe (the server exits by itself), then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        for step in (proc.terminate, proc.kill):
            try:
                proc.wait(3.0)
                break
            except subprocess.TimeoutExpired:
                step()
        try:
            proc.wait(3.0)
        except subprocess.TimeoutExpired:
            pass
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except (OSError, ValueError):
            pass


class InferenceClient:
    """predict() over HTTP to a local subprocess (default) or a remote v2 server (url=...)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, python: str | None = None,
                 model: str | None = None, device: str = "auto", model_name: str = MODEL_NAME,
                 start_timeout: float = 30.0, request_timeout: float = 300.0, idle_timeout: float = 900.0,
                 server_args: tuple = ()):
        self.remote = url is not None
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.python = python or sys.executable
        self.model = model
        self.device = device
        self.model_name = model_name
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.server_args = tuple(server_args)
        self.server: LocalServer | None = None
        self.metadata: dict | None = None
        self.last_crash: str | None = None  # the cause of the last restart, for the UI
        self.restarts = 0
        self._restarted_since_success = False
        self._conn = None
        self._conn_used = 0.0
        self._lock = threading.RLock()
        self._cancelled = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def spawn(self) -> "InferenceClient":
        """Local: start the server's process and return at once (a Popen in this thread: no
        threads, no HTTP); the next start() or request finishes the start (handshake, ready). Nothing for
        a remote server or one already started. Never raises: a process that cannot be started
        is reported by start(), as without spawn()."""
        with self._lock:
            if not self.remote and self.server is None:
                self._drop_connection()
                try:
                    self.server = LocalServer(self.python, self._server_argv())
                except DualPMError:
                    pass
        return self

    def start(self) -> "InferenceClient":
        """Start (local) or check (remote) the server and wait until the model is ready."""
        with self._lock:
            if self.remote:
                if self.metadata is None:
                    self._wait_ready(time.monotonic() + self.start_timeout)
            elif self.server is not None and not self.server.handshaken:
                self._finish_local()
            elif self.server is None or not self.server.alive():
                self._start_local()
        return self

    def _server_argv(self) -> list[str]:
        args = ["--device", self.device, "--idle-timeout", f"{self.idle_timeout:g}"]
        if self.model:
            args += ["--model", os.fspath(self.model)]
        return args + list(self.server_args)

    def _start_local(self):
        self._drop_connection()
        self._finish_local(LocalServer(self.python, self._server_argv()))

    def _finish_local(self, server: LocalServer | None = None):
        """The handshake and the ready wait of `server` (default: the spawned one), within
        start_timeout of now. Until its handshake succeeds, self.server stays what it was (the
        crashed one a restart replaces: the next request reports it again), or None for a spawned
        one."""
        spawned = server is None
        server = self.server if spawned else server
        end = time.monotonic() + self.start_timeout
        try:
            server.handshake(self.start_timeout, self._cancelled)
        except DualPMError:
            if spawned:
                self.server = None
            raise
        self.server = server
        self.url, self.token = self.server.url, self.server.token
        try:
            self._wait_ready(end)
        except DualPMError:
            self.server.stop()
            raise

    def _wait_ready(self, end: float):
        while True:
            if self._cancelled.is_set():
                raise InferenceCancelled("inference server start cancelled")
            try:
                status, _, body = self._request("GET", "/v2/health/ready", timeout=5.0)
                if status == 200:
                    status, _, body = self._request("GET", f"/v2/models/{self.model_name}", timeout=10.0)
                    if status != 200:
                        raise DualPMError(f"inference server at {self.url}: model {self.model_name!r} "
                                          f"metadata failed ({self._error_text(status, body)})")
                    self.metadata = json.loads(body)
                    return
                if status == 401:
                    raise DualPMError(f"inference server at {self.url} refused the token (HTTP 401)")
                why = f"HTTP {status}"
            except _ConnectionLost as e:
                if self.remote:  # nothing is listening there: waiting will not help
                    raise DualPMError(f"cannot reach the inference server at {self.url}: {e}") from None
                why = str(e)
            if self.server is not None and not self.server.alive():
                rc = self.server.wait(1.0)
                self.server.settle()
                raise DualPMError(f"inference server {describe_exit(rc)} before it was ready: "
                                  f"{self.server.last_line()}")
            if time.monotonic() > end:
                last = self.server.last_line() if self.server is not None else why
                raise DualPMError(f"server did not become ready within {self.start_timeout:g} s: {last}")
            time.sleep(0.05)

    def close(self):
        """Stop the local server (if any) and drop the connection."""
        with self._lock:
            self._drop_connection()
            if self.server is not None:
                # Spawned but never handshaken (the caller failed before it needed the server):
                # it serves nothing yet, so no need to wait for it to notice its closed stdin.
                self.server.stop(graceful=self.server.handshaken)
                self.server = None

    @property
    def input_size(self) -> int:
        if self.metadata is None:
            self.start()
        try:
            return int(self.metadata["inputs"][0]["shape"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return 160

    @property
    def providers(self) -> list:
        return list(((self.metadata or {}).get("parameters") or {}).get("execution_providers") or [])

    # --- inference ----------------------------------------------------------------------------

    def predict(self, image_uint8, mask_uint8=None) -> dict:
        """Same as inference.Runner.predict: a (H,W,3) crop or (N,H,W,3) batch, mask None = unknown."""
        image, mask, batched = as_batch(image_uint8, mask_uint8)
        out = self.infer({"image": image, "mask": mask})
        return out if batched else {k: v[0] for k, v in out.items()}

    def infer(self, inputs: dict, outputs=OUTPUTS) -> dict:
        """One v2 inference with binary tensors: {name: array} in, {name: array} out."""
        self._cancelled.clear()
        with self._lock:
            self._ensure_server()
            body, headers = _encode_request(inputs, outputs)
            try:
                status, rheaders, rbody = self._request("POST", f"/v2/models/{self.model_name}/infer", body,
                                                        headers, timeout=self.request_timeout)
            except _ConnectionLost as e:
                self._after_lost_connection(e)
            if status != 200:
                raise DualPMError(f"inference server: {self._error_text(status, rbody)}")
            result = _decode_response(rbody, rheaders.get(HEADER_LENGTH))
            self._restarted_since_success = False
            return result

    def cancel(self):
        """Make the request in progress (or a server start) raise InferenceCancelled soon; any thread."""
        self._cancelled.set()
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _ensure_server(self):
        if self.remote:
            if self.metadata is None:
                self.start()
            return
        if self.server is None:
            return self._start_local()
        if not self.server.handshaken:  # spawned: finish its start
            return self._finish_local()
        if self.server.alive():
            return
        rc = self.server.wait(1.0)
        cause = f"inference server {describe_exit(rc)} while idle"
        if rc == 0:  # it stopped on purpose (idle timeout): no news for the user
            return self._start_local()
        self.last_crash = f"{cause}: {self.server.last_line()}"
        self.restarts += 1
        self._restarted_since_success = True
        try:
            self._start_local()
        except DualPMError as e:
            raise DualPMError(f"{cause}; restarting it failed: {e}") from None

    def _after_lost_connection(self, e: Exception):
        if self._cancelled.is_set():
            raise InferenceCancelled("inference cancelled") from None
        if self.remote or self.server is None:
            raise DualPMError(f"lost the connection to the inference server at {self.url}: {e}") from None
        rc = self.server.wait(2.0)
        if rc is None:
            raise DualPMError(f"lost the connection to the inference server at {self.url}: {e}") from None
        self.server.settle()  # the stderr reader's last line
        cause = f"inference server {describe_exit(rc)} during the request"
        detail = self.server.last_line() if rc > 0 else ""
        self.last_crash = cause + (f": {detail}" if detail else "")
        if self._restarted_since_success:
            raise DualPMError(f"{cause} again; not restarting it (it crashed twice in a row)"
                              + (f": {detail}" if detail else "")) from None
        self._restarted_since_success = True
        self.restarts += 1
        try:
            self._start_local()
        except DualPMError as e2:
            raise DualPMError(f"{cause}; restarting it failed: {e2}") from None
        raise DualPMError(f"{cause}; restarted it" + (f" ({detail})" if detail else "")) from None

    # --- HTTP ---------------------------------------------------------------------------------

    def _connection(self, timeout: float):
        if self._conn is not None and time.monotonic() - self._conn_used > _REUSE_LIMIT_S:
            self._drop_connection()
        fresh = self._conn is None
        if fresh:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DualPMError(f"inference server URL {self.url!r}: expected http://host:port")
            cls = _NoDelayTLSConnection if parts.scheme == "https" else _NoDelayConnection
            self._prefix = parts.path.rstrip("/")
            self._conn = cls(parts.hostname, parts.port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn, fresh

    def _drop_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float = 30.0):
        """(status, headers, body); a broken connection raises _ConnectionLost after one retry on a
        fresh connection (a kept-alive one may have been closed by the server meanwhile)."""
        for attempt in (0, 1):
            conn, fresh = self._connection(timeout)
            h = dict(headers or {})
            if self.token:
                h["Authorization"] = f"Bearer {self.token}"
            try:
                conn.request(method, self._prefix + path, body=body, headers=h)
                resp = conn.getresponse()
                data = _read_body(resp)
                self._conn_used = time.monotonic()
                if resp.will_close:
                    self._drop_connection()
                return resp.status, resp.headers, data
            except socket.timeout:
                self._drop_connection()
                if self._cancelled.is_set():
                    raise _ConnectionLost("cancelled") from None
                raise DualPMError(f"inference server at {self.url} did not answer within {timeout:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                if fresh or attempt == 1 or self._cancelled.is_set():
                    raise _ConnectionLost(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None

    @staticmethod
    def _error_text(status: int, body: bytes) -> str:
        try:
            msg = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            msg = body[:200].decode("utf-8", "replace").strip() or "no details"
        return f"{msg} (HTTP {status})"


def _read_body(resp) -> bytearray:
    length = resp.getheader("Content-Length")
    if length is None:
        return bytearray(resp.read())
    buf = bytearray(int(length))
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = resp.readinto(view[got:])
        if not n:
            raise http.client.IncompleteRead(bytes(view[:got]), len(buf) - got)
        got += n
    return buf


def _encode_request(inputs: dict, outputs) -> tuple[bytes, dict]:
    tensors, blobs = [], []
    for name, arr in inputs.items():
        arr = np.ascontiguousarray(arr)
        dtype = {v: k for k, v in _DTYPES.items()}.get(arr.dtype.type)
        if dtype is None:
            raise DualPMError(f"input {name!r}: dtype {arr.dtype} cannot be sent")
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": dtype,
                        "parameters": {"binary_data_size": arr.nbytes}})
        blobs.append(arr.tobytes())
    header = json.dumps({"inputs": tensors,
                         "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs]},
                        separators=(",", ":")).encode()
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def _decode_response(body: bytearray, header_length) -> dict:
    try:
        hlen = int(header_length) if header_length is not None else len(body)
        resp = json.loads(bytes(body[:hlen]))
        out, offset = {}, hlen
        for o in resp["outputs"]:
            dtype = _DTYPES[o["datatype"]]
            size = (o.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(body, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
                offset += size
            else:
                arr = np.asarray(o["data"], dtype=dtype)
            out[o["name"]] = arr.reshape(o["shape"])
        return out
    except (ValueError, KeyError, TypeError) as e:
        raise DualPMError(f"inference server sent a malformed response ({type(e).__name__}: {e})") from None
