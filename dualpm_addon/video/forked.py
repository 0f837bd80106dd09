"""One piece of work in a forked copy of this process, its result one array: the windowed solve
runs its two halves at once on two cores (window.smooth), the preview draws its second half
(video/preview.py). `fork_child` is the one place this package forks (fit_process too).

    job = Forked(lambda: sweep(...))    # the copy starts on what this process holds now
    mine = sweep(...)                   # this process does its own share meanwhile
    theirs = job.result()               # the copy's array (np.save bytes over a pipe)

Where forking is not safe (fit_process.available: not Linux, or inside Blender's UI) or other
threads run here (a fork copies only the calling one, and any lock another holds), `allowed()`
is False and the caller does the work itself, in the same order: the result is the same.
"""

from __future__ import annotations

import io
import os
import sys
import threading

import numpy as np

from ..client import PIPE_READERS  # noqa: F401 - the inference client's threads a copy may be made beside
from ..errors import DualPMError


def allowed(ignore: tuple = ()) -> bool:
    """Fork is safe here: fit_process.available, and no thread but this one runs (threads named
    in `ignore` aside)."""
    from .fit_process import available

    others = [t for t in threading.enumerate() if t is not threading.current_thread() and t.name not in ignore]
    return available() and not others


def kill_and_reap(pid: int) -> None:
    """SIGKILL a forked child (if it still runs) and wait for it, so no zombie is left."""
    if pid <= 0:
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _die_with_parent() -> None:
    """The copy is killed with the process that forked it (a cancelled fit process must not leave
    a copy computing for nobody): Linux's PR_SET_PDEATHSIG; best effort."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def fork_child() -> int:
    """os.fork with what every fork here needs: buffered output flushed first (else the child
    prints it again), and in the child (0 returned) death with its parent."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _die_with_parent()
    return pid


class Forked:
    def __init__(self, fn, what: str = "animate: the clip fit's second process"):
        """Run fn() in a forked copy; `what` names it in result()'s error."""
        r, w = os.pipe()
        self.what = what
        self.pid = fork_child()
        if self.pid == 0:
            os.close(r)
            code = 0
            try:
                buf = io.BytesIO()
                np.save(buf, np.asarray(fn()), allow_pickle=False)
                payload = b"A" + buf.getvalue()
            except BaseException as e:  # noqa: BLE001 - one line back to the parent
                payload = f"E{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".encode()
                code = 1
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(w, view):]
            finally:
                os._exit(code)
        os.close(w)
        self._r = r

    def result(self) -> np.ndarray:
        chunks = []
        try:
            while True:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self.kill()
        data = b"".join(chunks)
        if data[:1] == b"A":
            return np.load(io.BytesIO(data[1:]), allow_pickle=False)
        why = data[1:].decode("utf-8", "replace") if data[:1] == b"E" else "it ended without a result"
        raise DualPMError(f"{self.what} failed ({why})")

    def kill(self) -> None:
        """Stop the copy (if it still runs) and reap it; idempotent."""
        kill_and_reap(self.pid)
        self.pid = -1
        if self._r is not None:
            try:
                os.close(self._r)
            except OSError:
                pass
            self._r = None
