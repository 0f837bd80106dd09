"""`dualpm serve` and `python -m model_server`: run the inference server.

Prints one JSON line on stdout, {"url": ..., "token": ...}, as soon as it listens, and nothing
else ever on stdout (the stdout file descriptor itself is pointed at stderr, so even native
libraries cannot write there); logs go to stderr. The model loads in the background:
/v2/health/ready answers 200 once it has. Exit codes: 0 after a graceful stop (SIGTERM, SIGINT,
parent gone, idle timeout), 2 for bad arguments or a port that cannot be bound, 3 when the model
cannot be loaded.

The token is DUALPM_SERVER_TOKEN from the environment when set (for a server shared on purpose),
else a fresh random one (never on the command line, where other users could read it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time

log = logging.getLogger("dualpm.server")

EXIT_OK, EXIT_USAGE, EXIT_MODEL = 0, 2, 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port, see the handshake line)")
    p.add_argument("--model", default=None, help="ONNX model (default assets/dualpm.onnx)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="execution provider: auto = CUDA when available, else CPU")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body in MiB (default 8)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch N per request (default 8)")
    p.add_argument("--max-connections", type=int, default=64, help="open connections at most (default 64)")
    p.add_argument("--max-inflight", type=int, default=8,
                   help="requests holding data in memory at once; the rest wait in a queue (default 8)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="model runs at once (default 1 on CPU, 2 with CUDA)")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--read-timeout", type=float, default=30.0,
                   help="seconds a client may stay silent mid-request (default 30)")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="exit after this many seconds without a request (default 0: never)")
    p.add_argument("--no-parent-watch", action="store_true",
                   help="keep running when the process that started this one exits")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when standard input closes (the client holds a pipe; works on every OS)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to finish running requests on shutdown")
    p.add_argument("--spin", action="store_true",
                   help="let ONNX Runtime's threads busy-wait between runs (faster back-to-back runs on "
                        "a machine with cores to spare; by default they sleep, leaving the cores to the HTTP work)")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")


def _take_stdout() -> int:
    """A private duplicate of stdout for the handshake; fd 1 and sys.stdout then go to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


def run(args) -> int:
    # The parent as it was at start: read later, a parent that died in between (right after the
    # handshake, say) would already read as init, and the server would never notice it was gone.
    parent = os.getppid()
    handshake_fd = _take_stdout()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="dualpm-server: %(message)s")
    from dualpm_addon.errors import DualPMError
    from dualpm_addon.inference import default_model_path

    from .server import Config, Server, State

    try:
        model = args.model or default_model_path()
        if not os.path.isfile(model):
            raise DualPMError(f"model {model}: no such file")
        for name in ("max_batch", "max_connections", "max_inflight"):
            if getattr(args, name) < 1:
                raise DualPMError(f"--{name.replace('_', '-')} must be at least 1")
        config = Config(max_body=int(args.max_body_mb * (1 << 20)), max_batch=args.max_batch,
                        max_connections=args.max_connections, max_inflight=args.max_inflight,
                        concurrency=args.concurrency or 1, request_timeout=args.request_timeout,
                        read_timeout=args.read_timeout)
    except DualPMError as e:
        log.error("error: %s", e)
        return EXIT_USAGE
    token = os.environ.get("DUALPM_SERVER_TOKEN") or secrets.token_urlsafe(32)
    state = State(token, config)
    try:
        server = Server((args.host, args.port), state)
    except OSError as e:
        log.error("error: cannot listen on %s:%s (%s)", args.host, args.port, e.strerror or e)
        return EXIT_USAGE

    stop = threading.Event()
    outcome = {"code": EXIT_OK, "why": ""}

    def request_stop(code: int, why: str):
        if not stop.is_set():
            outcome.update(code=code, why=why)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, lambda s, _f: request_stop(EXIT_OK, f"signal {signal.Signals(s).name}"))

    # The accept loop notices a shutdown only at its next poll: 0.05 s, so a stop (the client's
    # pipe closing when `dualpm reconstruct` finishes, which waits for it) takes ~0.07 s, not 0.17.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="accept", daemon=True).start()
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    os.write(handshake_fd, (json.dumps({"url": url, "token": token}) + "\n").encode())
    os.close(handshake_fd)
    log.info("listening on %s (model %s)", url, os.path.basename(model))

    def load():
        try:
            from dualpm_addon.inference import Runner

            t = time.monotonic()
            runner = Runner(model, device=args.device, threads=args.threads, spin=args.spin)
            if args.concurrency is None and runner.device == "cuda":
                state.runs.limit = 2
            state.runner = runner
            state.ready.set()
            log.info("ready: %s on %s in %.1f s", os.path.basename(model), ", ".join(runner.providers),
                     time.monotonic() - t)
        except DualPMError as e:
            request_stop(EXIT_MODEL, f"error: {e}")
        except Exception as e:
            request_stop(EXIT_MODEL, f"error: model {os.path.basename(model)}: {type(e).__name__}: {e}")

    threading.Thread(target=load, name="load", daemon=True).start()

    if args.watch_stdin:
        def watch_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            request_stop(EXIT_OK, "standard input closed (the parent is gone)")

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    watch_parent = not args.no_parent_watch and parent > 1
    while not stop.wait(0.5):
        if watch_parent and os.getppid() != parent:
            request_stop(EXIT_OK, f"parent process {parent} exited")
        elif args.idle_timeout > 0 and state.idle_for() > args.idle_timeout:
            request_stop(EXIT_OK, f"idle for {args.idle_timeout:g} s")

    if outcome["code"] == EXIT_OK:
        log.info("stopping: %s", outcome["why"])
    state.draining = True
    server.shutdown()
    server.server_close()
    end = time.monotonic() + args.grace
    while state.inflight and time.monotonic() < end:
        time.sleep(0.05)
    if state.inflight:
        log.info("stopped with %d request(s) unfinished after %g s", state.inflight, args.grace)
    if outcome["code"] != EXIT_OK:  # the reason is the last line on stderr, where the client looks
        log.error("%s", outcome["why"])
    return outcome["code"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_server", description="DualPM inference server (KServe v2)")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    code = main()
    # Out at once: the interpreter's teardown (the model's session, the threads' modules) took
    # 0.1 s that `dualpm reconstruct` waited for; nothing is left to write but the logs.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
