"""The clip fit in a process of its own, fed each frame's map while inference makes the next.

    worker = FitProcess(template, options, frames=n)    # forks; the child waits for maps
    infer.predict_frames(..., on_map=worker.submit)      # each final map goes to the child
    fit = worker.fit(maps, report, cancelled)            # the child's ClipFit
    worker.cancel()                                      # inference failed: the child is killed

Why a process: the fit's first step (frame.observe and the keyframes' photo fits) runs beside
the predictor, and on a thread (fit.FrameObserver) it shares the interpreter's lock with
inference's own Python (cropping, checks, the maps): on the 120-frame cat clip the thread's 2.8 s
of work took 4.5 s there, and the fit waited 1.8 s for it after inference had ended. In a
process the two run on their own cores.

The child is a fork of this process made before inference starts: it holds the template, the
fit's context and the options as they are here, and runs the same code as fit.FrameObserver
and fit.fit_clip, so the result is the same as in process (tests/test_video_fit_process.py).
What crosses between the two is plain arrays and text, never pickles: each frame's map as a file of
.npy records in a private temporary folder (named over a pipe), progress and the outcome as lines
over another pipe, the ClipFit as an .npz of its arrays and a JSON of the rest
(`encode_fit`, `decode_fit`).

Only where fork is safe: Linux, and not inside Blender's UI, whose process holds a window, a
GPU context and threads of its own (`available`); elsewhere animate keeps the thread.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import tempfile
import threading
from dataclasses import fields

import numpy as np

from ..errors import DualPMError


def available() -> bool:
    """Fork is offered and safe here: Linux, outside Blender's UI (headless bpy and `blender -b`
    are fine: they have no window)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    bpy = sys.modules.get("bpy")
    if bpy is not None:
        app = getattr(bpy, "app", None)
        if app is not None and not getattr(app, "background", True):
            return False
    return True


# -- what crosses: maps and the fit as arrays and JSON ----------------------------------------
def save_frame(path: str, frame) -> None:
    """A frame's final entry (a map dict, or a list of them, one per animal) as one file of .npy
    records: the keys ("animal/name"), then each array in their order (no zip: no CRC to
    compute over a few MB a frame)."""
    items = [frame] if isinstance(frame, dict) else list(frame)
    keys = [f"{i}/{k}" for i, pm in enumerate(items) for k in pm]
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        np.save(f, np.array(keys if keys else [""], dtype=str), allow_pickle=False)
        np.save(f, np.asarray(len(items)), allow_pickle=False)
        for i, pm in enumerate(items):
            for v in pm.values():
                np.save(f, np.asarray(v), allow_pickle=False)
    os.replace(tmp, path)


def load_frame(path: str):
    """save_frame's entry back: a dict, or a list of dicts (0-d arrays as numpy scalars)."""
    with open(path, "rb") as f:
        keys = [str(k) for k in np.load(f, allow_pickle=False)]
        count = int(np.load(f, allow_pickle=False))
        items = [{} for _ in range(count)]
        for key in keys:
            if not key:
                continue
            i, name = key.split("/", 1)
            a = np.load(f, allow_pickle=False)
            items[int(i)][name] = a[()] if a.ndim == 0 else a
    return items[0] if count == 1 else items


_REBUILT = ("rest_skeleton",)  # made again from the template and the fit's scales


def encode_fit(fit, directory: str) -> None:
    """A ClipFit as result.npz (its arrays) and result.json (the rest)."""
    arrays, rest = {}, {}
    for f in fields(fit):
        v = getattr(fit, f.name)
        if f.name in _REBUILT:
            continue
        if isinstance(v, np.ndarray):
            arrays[f.name] = v
        else:
            rest[f.name] = list(v) if isinstance(v, tuple) else v
    with open(os.path.join(directory, "result.npz"), "wb") as fh:
        np.savez(fh, **arrays)
    with open(os.path.join(directory, "result.json"), "w", encoding="utf-8") as fh:
        json.dump(rest, fh)


def decode_fit(directory: str, template):
    """encode_fit's files back into a ClipFit (the rest skeleton rebuilt from its scales)."""
    from ..fitting.rig import scaled_rest_skeleton
    from ..pipeline import fit_context
    from .fit import ClipFit

    with np.load(os.path.join(directory, "result.npz"), allow_pickle=False) as z:
        values = {k: z[k] for k in z.files}
    with open(os.path.join(directory, "result.json"), encoding="utf-8") as fh:
        values.update(json.load(fh))
    for name in ("photo_size", "foot_names"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    sk = fit_context(template).skeleton
    values["rest_skeleton"] = scaled_rest_skeleton(sk, values["global_scale"], values["bone_scales"])
    return ClipFit(**values)


# -- the two sides -----------------------------------------------------------------------------
class FitProcess:
    """fit.FrameObserver's place (submit, cancel) and fit_clip's (fit), in a forked child."""

    def __init__(self, template, options, frames: int | None = None):
        from ..pipeline import fit_context

        self.template, self.options = template, options
        fit_context(template)  # built once here, so the child has it from the fork
        # in memory where the system has a tmpfs for it: a clip's maps are a few hundred MB
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="dualpm-fit-", dir=shm)
        self._lock = threading.Lock()
        self._sent: set = set()
        self.seconds = 0.0  # the child's observing during inference (reported with its result)
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        from .forked import fork_child

        self.pid = fork_child()
        if self.pid == 0:  # the child: never returns
            os.close(self._to_child)
            os.close(self._from_child)
            _child(to_child_r, from_child_w, self.dir, template, options, frames)
        os.close(to_child_r)
        os.close(from_child_w)
        self._closed = False

    def _send(self, line: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._to_child, (line + "\n").encode())
            except OSError:  # the child is gone: fit() says why
                pass

    def submit(self, t: int, frame) -> None:
        """Frame t's final entry, from any thread (save_frame's file, then its name over the pipe)."""
        if self._closed:
            return
        path = os.path.join(self.dir, f"map-{int(t)}.npy")
        try:
            save_frame(path, frame)
        except OSError:
            return  # fit() writes it again with the final list
        with self._lock:
            self._sent.add(int(t))
        self._send(f"map {int(t)} {path}")

    def fit(self, frames: list, report=None, cancelled=None, meanwhile=None):
        """Send the final list (which frames have maps) and wait for the child's ClipFit. Frames
        the child has not been sent are written now. meanwhile(), where given, runs here while
        the child fits (this process's core is otherwise idle). cancelled() is checked ten times a
        second: the child is killed and pipeline.Cancelled raised."""
        from ..pipeline import Cancelled

        report = report or (lambda stage, fraction: None)
        try:
            with self._lock:
                have = set(self._sent)
            for t, fr in enumerate(frames):
                if fr is not None and t not in have:
                    self.submit(t, fr)
            present = ",".join(str(t) for t, fr in enumerate(frames) if fr is not None)
            self._send(f"end {len(frames)} {present or '-'}")
            if meanwhile is not None:
                meanwhile()
            buf = b""
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled("cancelled")
                ready, _, _ = select.select([self._from_child], [], [], 0.1)
                if not ready:
                    continue
                chunk = os.read(self._from_child, 65536)
                if not chunk:
                    raise DualPMError(f"animate: the clip fit's process ended unexpectedly ({self._exit_status()})")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    kind, _, rest = line.decode("utf-8", "replace").partition(" ")
                    if kind == "progress":
                        stage, fraction = rest.split(" ")
                        report(stage, float(fraction))
                    elif kind == "observed":
                        self.seconds = float(rest)
                    elif kind == "error":
                        raise DualPMError(rest)
                    elif kind == "done":
                        return decode_fit(self.dir, self.template)
        finally:
            self.cancel()

    def _exit_status(self) -> str:
        try:
            pid, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "no exit status"
        self.pid = -1
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit code {os.WEXITSTATUS(status)}"

    def cancel(self) -> None:
        """End the child (killed if still running) and remove the temporary folder; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        from .forked import kill_and_reap

        kill_and_reap(self.pid)
        self.pid = -1
        shutil.rmtree(self.dir, ignore_errors=True)

    def __del__(self):
        try:
            self.cancel()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _child(rfd: int, wfd: int, directory: str, template, options, frames: int | None) -> None:
    """The forked side: observe maps as they come, fit the clip at "end", report, exit."""
    code = 0
    try:
        def send(line: str) -> None:
            os.write(wfd, (line + "\n").encode())

        from ..fitting.blas import single_threaded_blas
        from .fit import FrameObserver, fit_clip

        with single_threaded_blas():
            observer = FrameObserver(template, options, frames=frames, thread=False)
            received: dict = {}
            with os.fdopen(rfd, "rb", buffering=0) as pipe:
                for raw in _lines(pipe):
                    kind, _, rest = raw.partition(" ")
                    if kind == "map":
                        t, path = rest.split(" ", 1)
                        received[int(t)] = load_frame(path)
                        os.remove(path)
                        observer.submit(int(t), received[int(t)])
                    elif kind == "end":
                        n, present = rest.split(" ")
                        have = set() if present == "-" else {int(v) for v in present.split(",")}
                        clip = [received.get(t) if t in have else None for t in range(int(n))]
                        missing = [t for t in have if t not in received]
                        if missing:
                            raise DualPMError(f"animate: the clip fit's process did not get frame {min(missing) + 1}")
                        send(f"observed {observer.seconds:.6f}")
                        fit = fit_clip(clip, template=template, options=options,
                                       report=lambda stage, fraction: send(f"progress {stage} {fraction:.6f}"),
                                       observed=observer)
                        encode_fit(fit, directory)
                        send("done")
                        break
    except DualPMError as e:
        _say(wfd, f"error {str(e).splitlines()[0] if str(e) else 'animate: the clip fit failed'}")
        code = 1
    except BaseException as e:  # noqa: BLE001 - one line to the parent, whatever it was
        _say(wfd, f"error animate: the clip fit failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        code = 1
    finally:
        os._exit(code)


def _say(wfd: int, line: str) -> None:
    try:
        os.write(wfd, (line + "\n").encode())
    except OSError:
        pass


def _lines(pipe):
    buf = b""
    while True:
        chunk = pipe.read(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
