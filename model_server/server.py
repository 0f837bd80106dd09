"""The DualPM inference server: one ONNX Runtime session behind the KServe v2 HTTP API.

Standard library HTTP (a thread per connection) + numpy + onnxruntime. See docs/server.md for the
protocol, the options and the limits. In short:

- Every request needs `Authorization: Bearer TOKEN` (401 otherwise), checked before anything else
  with a constant-time comparison.
- Bounded: at most `max_connections` connections (more get 503 at once); at most `max_inflight`
  requests hold a body or a result in memory, the others wait in a FIFO queue *before their body
  is read*; at most `concurrency` ONNX Runtime runs at a time. Memory held by requests is at most
  max_inflight x (max_body + max_batch x output bytes per item).
- A body larger than `max_body` gets 413 before any of it is read; a request must finish within
  `request_timeout` (503 if it waited that long in the queue, 408 if its body came too slowly,
  504 if the run itself took too long: the run is terminated).
- Errors are JSON `{"error": "..."}` with the status that fits; nothing a client sends crashes it.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dualpm_addon import __version__
from dualpm_addon.errors import DualPMError
from dualpm_addon.inference import INPUTS, OUTPUTS, check_inputs

from .protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer_request

log = logging.getLogger("dualpm.server")

MODEL_NAME = "dualpm"
MODEL_VERSION = "1"
SERVER_NAME = "dualpm-server"


class Config:
    """Server limits (see docs/server.md); plain attributes so tests and the CLI can set them."""

    def __init__(self, **kw):
        self.max_body = 8 << 20  # bytes
        self.max_batch = 8
        self.max_connections = 64
        self.max_inflight = 8
        self.concurrency = 1
        self.request_timeout = 60.0  # seconds, from the request's headers to its result
        self.read_timeout = 30.0  # seconds without a byte from the client
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown server setting {k}")
            setattr(self, k, v)


class QueueTimeout(Exception):
    pass


class FifoSlots:
    """At most `limit` holders; the rest wait first come, first served."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self.waiting: deque = deque()
        self.cond = threading.Condition()

    def acquire(self, timeout: float) -> None:
        with self.cond:
            if self.active < self.limit and not self.waiting:
                self.active += 1
                return
            ticket = object()
            self.waiting.append(ticket)
            end = time.monotonic() + timeout
            try:
                while not (self.waiting[0] is ticket and self.active < self.limit):
                    left = end - time.monotonic()
                    if left <= 0:
                        raise QueueTimeout()
                    self.cond.wait(left)
                self.waiting.popleft()
                self.active += 1
            finally:
                if ticket in self.waiting:  # timed out: leave the queue, let the next one look
                    self.waiting.remove(ticket)
                    self.cond.notify_all()

    def release(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify_all()


class State:
    """What the handlers share: the model (once loaded), the limits, the counters."""

    def __init__(self, token: str, config: Config):
        self.token = token.encode()
        self.config = config
        self.runner = None
        self.ready = threading.Event()
        self.draining = False
        self.inflight = 0  # requests being handled (not idle keep-alive connections)
        self.lock = threading.Lock()
        self.idle_since = time.monotonic()
        self.admission = FifoSlots(config.max_inflight)
        self.runs = FifoSlots(config.concurrency)

    def begin(self):
        with self.lock:
            self.inflight += 1

    def end(self):
        with self.lock:
            self.inflight -= 1
            self.idle_since = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.inflight else time.monotonic() - self.idle_since


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME + "/" + __version__
    sys_version = ""

    def version_string(self):
        return self.server_version
    disable_nagle_algorithm = True
    error_content_type = "application/json"

    # --- plumbing -------------------------------------------------------------------------------

    def setup(self):
        self.timeout = self.server.state.config.read_timeout
        super().setup()

    @property
    def state(self) -> State:
        return self.server.state

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def log_error(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    def handle_expect_100(self):
        return True  # "100 Continue" is sent only once the request passed its checks (_read_body)

    def send_error(self, code, message=None, explain=None):
        """http.server's own protocol errors (bad request line, headers too large...) as JSON."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        text = text if len(text) <= 200 else text[:200] + "..."  # it may quote what the client sent
        try:
            self._reply(code, {"error": f"{text}"}, close=True)
        except OSError:
            pass

    def _reply(self, status: int, obj=None, *, body: bytes | None = None, chunks=(), headers=(),
               close: bool = False, content_type: str = "application/json"):
        if body is None:
            body = json.dumps(obj, separators=(",", ":")).encode() if obj is not None else b""
        length = len(body) + sum(c.nbytes for c in chunks)
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 f"Server: {self.version_string()}", f"Date: {self.date_time_string()}",
                 f"Content-Type: {content_type}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if close or self.close_connection:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)  # always with headers: HTTP/0.9's bare bodies are long obsolete
        for c in chunks:
            self.wfile.write(c)
        self.log_request(status, length)

    def _error(self, status: int, message: str, close: bool = False, headers=()):
        log.debug("%s -> %d %s", self.path, status, message)
        self._reply(status, {"error": message}, close=close, headers=headers)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip().encode("utf-8", "replace") if scheme.lower() == "bearer" else b""
        # compare_digest on equal-length inputs is constant-time; the length itself is no secret
        return hmac.compare_digest(given, self.state.token)

    def _unread_body(self) -> bool:
        return (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                or "Transfer-Encoding" in self.headers)

    def _refuse(self, status: int, message: str, headers=()):
        """Answer without reading the body, then close the connection (lingering: `linger`)."""
        unread = self._unread_body()
        self._error(status, message, close=unread or self.close_connection, headers=headers)
        if unread:
            linger(self.connection, seconds=2.0)

    # --- routing --------------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        if not self._authorized():
            self._refuse(401, "missing or wrong bearer token", headers=[("WWW-Authenticate", "Bearer")])
            return
        if method != "POST" and self._unread_body():
            self.close_connection = True  # a body nobody reads must not be taken for the next request
        self.state.begin()
        try:
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log.info("%s: the client went away", self.path)
        except OSError as e:
            self.close_connection = True
            log.info("%s: connection error: %s", self.path, e)
        except Exception as e:  # a bug must cost one request, never the server
            log.exception("internal error on %s", self.path)
            try:
                self._refuse(500, f"internal server error: {type(e).__name__}: {e}")
            except OSError:
                pass
        finally:
            self.state.end()

    def _route(self, method: str):
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = path.split("/")[1:]  # '/v2/models/x/infer' -> ['v2', 'models', 'x', 'infer']
        if not parts or parts[0] != "v2":
            return self._refuse(404, f"no such endpoint {path or '/'}; this is a KServe v2 server (/v2/...)")
        rest = parts[1:]
        if rest in ([], ["health", "live"], ["health", "ready"]):
            if method != "GET":
                return self._refuse(405, f"{path} takes GET")
            if not rest:
                return self._reply(200, {"name": SERVER_NAME, "version": __version__,
                                         "extensions": ["binary_tensor_data"]})
            if rest[1] == "live":
                return self._reply(200, {"live": True})
            ready = self.state.ready.is_set() and not self.state.draining
            return self._reply(200 if ready else 503, {"ready": ready})
        if len(rest) >= 2 and rest[0] == "models":
            name, tail = rest[1], rest[2:]
            if len(tail) >= 2 and tail[0] == "versions":
                if tail[1] != MODEL_VERSION:
                    return self._refuse(404, f"model {name!r} has no version {tail[1]!r} (it has {MODEL_VERSION})")
                tail = tail[2:]
            if name != MODEL_NAME:
                return self._refuse(404, f"unknown model {name!r}; this server serves {MODEL_NAME!r}")
            if tail == [] or tail == ["ready"]:
                if method != "GET":
                    return self._refuse(405, f"{path} takes GET")
                if tail == ["ready"]:
                    ready = self.state.ready.is_set() and not self.state.draining
                    return self._reply(200 if ready else 503, {"name": MODEL_NAME, "ready": ready})
                return self._metadata()
            if tail == ["infer"]:
                if method != "POST":
                    return self._refuse(405, f"{path} takes POST")
                return self._infer()
        return self._refuse(404, f"no such endpoint {path}")

    # --- endpoints ------------------------------------------------------------------------------

    def _metadata(self):
        runner = self.state.runner
        if runner is None:
            return self._error(503, "the model is still loading")
        s = runner.input_size
        k = runner.layers
        shapes = {"image": ([-1, s, s, 3], "UINT8"), "mask": ([-1, s, s], "UINT8"),
                  "P": ([-1, k, s, s, 3], "FP32"), "Q": ([-1, k, s, s, 3], "FP32"),
                  "occupancy": ([-1, k, s, s], "FP32"), "confidence": ([-1, k, s, s], "FP32")}
        meta = {
            "name": MODEL_NAME, "versions": [MODEL_VERSION], "platform": "onnxruntime_onnx",
            "inputs": [{"name": n, "datatype": shapes[n][1], "shape": shapes[n][0]} for n in INPUTS],
            "outputs": [{"name": n, "datatype": shapes[n][1], "shape": shapes[n][0]} for n in OUTPUTS],
            "parameters": {
                "execution_providers": runner.providers,
                "device": runner.device,
                "max_batch": self.state.config.max_batch,
                **{k: v for k, v in runner.metadata.items()},
            },
        }
        self._reply(200, meta)

    def _read_body(self, length: int, deadline: float) -> bytearray:
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        read_timeout = self.state.config.read_timeout
        while got < length:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline")
            self.connection.settimeout(min(read_timeout, left))
            n = self.rfile.readinto1(view[got:])
            if not n:
                raise ConnectionResetError("the client closed the connection mid-body")
            got += n
        self.connection.settimeout(read_timeout)
        return buf

    def _infer(self):
        st, cfg = self.state, self.state.config
        start = time.monotonic()
        deadline = start + cfg.request_timeout
        if "Transfer-Encoding" in self.headers:
            return self._refuse(411, "chunked bodies are not supported; send Content-Length")
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return self._refuse(415, f"Content-Encoding {encoding} is not supported; send the body uncompressed")
        raw_len = self.headers.get("Content-Length")
        if raw_len is None:
            return self._refuse(411, "Content-Length is required")
        try:
            length = int(raw_len)
            if length < 0:
                raise ValueError
        except ValueError:
            return self._refuse(400, f"Content-Length {raw_len!r} is not a byte count")
        if length > cfg.max_body:
            return self._refuse(413, f"request body of {length} bytes exceeds the limit of {cfg.max_body} bytes")
        hlen = self.headers.get(HEADER_LENGTH)
        try:
            header_length = int(hlen) if hlen is not None else None
        except ValueError:
            return self._refuse(400, f"{HEADER_LENGTH} {hlen!r} is not a byte count")
        if st.draining:
            return self._refuse(503, "the server is shutting down")
        if not st.ready.is_set():
            return self._refuse(503, "the model is still loading; poll /v2/health/ready")
        try:
            st.admission.acquire(deadline - time.monotonic())
        except QueueTimeout:
            return self._refuse(503, f"server busy: waited {cfg.request_timeout:g} s in the queue",
                                headers=[("Retry-After", "1")])
        try:
            try:
                body = self._read_body(length, deadline)
            except TimeoutError:
                return self._refuse(408, f"the request body did not arrive within the time limit "
                                         f"({length} bytes expected)")
            try:
                inputs, requested, binary_default, rid = parse_infer_request(body, header_length)
                n = check_inputs(inputs, st.runner.input_size, cfg.max_batch)
                if requested is None:
                    requested = [(name, binary_default) for name in OUTPUTS]
                for name, _ in requested:
                    if name not in OUTPUTS:
                        raise ProtocolError(400, f"unknown output {name!r}; the model's outputs are "
                                                 f"{', '.join(OUTPUTS)}")
            except ProtocolError as e:
                return self._error(e.status, e.message)
            except DualPMError as e:
                return self._error(400, str(e))
            del body
            log.debug("infer n=%d: running", n)
            t_run = time.monotonic()
            results = self._run(inputs, [name for name, _ in requested], deadline)
            if results is None:
                return
            t_run = time.monotonic() - t_run
            header, chunks, hlen_out = encode_infer_response(MODEL_NAME, MODEL_VERSION, rid, results, requested)
            del results
            headers = [(HEADER_LENGTH, hlen_out)] if hlen_out is not None else []
            # W3C Server-Timing: lets a client split its round trip into model time and the rest
            headers.append(("Server-Timing", f"run;dur={t_run * 1e3:.3f}, "
                                             f"handler;dur={(time.monotonic() - start) * 1e3:.3f}"))
            ctype = "application/octet-stream" if hlen_out is not None else "application/json"
            self._reply(200, body=header, chunks=chunks, headers=headers, content_type=ctype)
            log.debug("infer n=%d in %.1f ms", n, (time.monotonic() - start) * 1e3)
        finally:
            st.admission.release()

    def _run(self, inputs, outputs, deadline):
        st = self.state
        try:
            st.runs.acquire(deadline - time.monotonic())
        except QueueTimeout:
            self._error(503, f"server busy: no free model slot within {st.config.request_timeout:g} s",
                        headers=[("Retry-After", "1")])
            return None
        try:
            opts = st.runner.run_options()
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), lambda: setattr(opts, "terminate", True))
            timer.daemon = True
            timer.start()
            try:
                return st.runner.run(inputs, outputs, run_options=opts)
            except TimeoutError:
                self._error(504, f"inference did not finish within {st.config.request_timeout:g} s")
                return None
            except DualPMError as e:
                self._error(500, str(e))
                return None
            finally:
                timer.cancel()
        finally:
            st.runs.release()


def linger(sock: socket.socket, seconds: float, max_bytes: int = 1 << 20) -> None:
    """Half-close, then discard what the client still sends (at most `max_bytes`, `seconds`).

    Closing a socket with the client's data unread sends a TCP reset, which can destroy our
    answer before the client reads it; the discarded data is never kept."""
    try:
        sock.shutdown(socket.SHUT_WR)
        end, dropped = time.monotonic() + seconds, 0
        while dropped < max_bytes and time.monotonic() < end:
            sock.settimeout(max(0.01, min(0.2, end - time.monotonic())))
            chunk = sock.recv(65536)
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: connections the kernel holds before accept

    def __init__(self, address, state: State):
        import os

        self.allow_reuse_address = os.name != "nt"  # on Windows it would let others share the port
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self._connections = threading.BoundedSemaphore(state.config.max_connections)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            try:  # over the connection limit: say so at once rather than queue without bound
                request.settimeout(1.0)
                body = b'{"error":"too many connections; retry later"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            linger(request, seconds=0.2)  # short: this runs on the accepting thread
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request, client_address):
        log.exception("unhandled error for %s", client_address)
