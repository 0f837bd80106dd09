"""The clip fit in a forked process (video/fit_process.py) and the windowed solve's two halves
(video/forked.py, window.smooth): the same fit as in process, plain arrays across, one-line
errors, cancel, and nothing left behind."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.pipeline import Cancelled
from dualpm_addon.video import ClipOptions, fit_clip, fit_process, forked, window
from training import clips

pytestmark = pytest.mark.skipif(not fit_process.available(), reason="fork is used on Linux only")

OPTIONS = ClipOptions(fps=24.0, keyframes=2)


@pytest.fixture(scope="module")
def walk(templates_dir):
    frames = clips.render_clip(templates_dir, "horse", "Walk", seed=1, count=6, backgrounds_dir=None)
    return [clips.exact_frame(f) for f in frames]


@pytest.fixture(scope="module")
def walk_fit(walk, horse):
    return fit_clip(walk, horse, OPTIONS)


def _same(a, b):
    for name in ("joints_cam", "rotations", "model_to_camera", "intrinsics", "rig_iou", "rest_vertices", "cost",
                 "contacts", "tracked", "bridged", "bone_scales", "thickness"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=getattr(a, name).dtype != bool), name
    assert np.array_equal(a.rest_skeleton.rest_heads, b.rest_skeleton.rest_heads)
    assert a.to_dict()["shape"] == b.to_dict()["shape"] and a.photo_size == b.photo_size
    assert a.foot_names == b.foot_names and a.joint_names == b.joint_names


def test_the_child_fits_what_fit_clip_fits(walk, walk_fit, horse):
    worker = fit_process.FitProcess(horse, OPTIONS, frames=len(walk))
    folder = worker.dir
    for t in (0, 2, 5):  # the rest are sent with the final list
        worker.submit(t, walk[t])
    reports, meanwhile = [], []
    fit = worker.fit(list(walk), report=lambda s, f: reports.append((s, f)), meanwhile=lambda: meanwhile.append(1))
    _same(fit, walk_fit)
    assert {s for s, _ in reports} >= {"shape", "track", "smooth"} and meanwhile == [1]
    assert worker.seconds > 0  # the child observed the frames it was sent
    assert not os.path.exists(folder) and worker.pid == -1  # the folder removed, the child reaped


def test_frames_and_fits_cross_as_plain_arrays(tmp_path, walk, walk_fit, horse):
    path = str(tmp_path / "frame.npy")
    two = [walk[0], dict(walk[1], mask_source="segmenter")]
    fit_process.save_frame(path, two)
    back = fit_process.load_frame(path)
    assert isinstance(back, list) and len(back) == 2 and back[1]["mask_source"] == "segmenter"
    for k, v in walk[0].items():
        assert np.array_equal(np.asarray(back[0][k]), np.asarray(v)) and np.asarray(back[0][k]).dtype == np.asarray(v).dtype
    fit_process.save_frame(path, walk[0])
    assert isinstance(fit_process.load_frame(path), dict)
    fit_process.encode_fit(walk_fit, str(tmp_path))
    _same(fit_process.decode_fit(str(tmp_path), horse), walk_fit)


def test_a_clip_without_an_animal_is_the_fits_one_line_error(walk, horse):
    empty = dict(walk[0], occupancy=np.zeros_like(walk[0]["occupancy"]))
    worker = fit_process.FitProcess(horse, OPTIONS, frames=2)
    worker.submit(0, empty)
    with pytest.raises(DualPMError, match="no frame of the clip shows an animal") as e:
        worker.fit([empty, None])
    assert "\n" not in str(e.value) and worker.pid == -1


def test_cancel_kills_the_child(walk, horse):
    worker = fit_process.FitProcess(horse, OPTIONS, frames=len(walk))
    pid, folder = worker.pid, worker.dir
    with pytest.raises(Cancelled):
        worker.fit(list(walk), cancelled=lambda: True)
    assert not os.path.exists(folder)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    worker = fit_process.FitProcess(horse, OPTIONS, frames=len(walk))
    worker.cancel()  # inference failed: no fit() follows
    worker.cancel()
    assert worker.pid == -1 and not os.path.exists(worker.dir)


def test_a_child_that_dies_is_a_one_line_error(walk, horse):
    worker = fit_process.FitProcess(horse, OPTIONS, frames=len(walk))
    threading.Timer(0.3, lambda: os.kill(worker.pid, signal.SIGKILL)).start()
    time.sleep(0.5)
    with pytest.raises(DualPMError, match="ended unexpectedly .killed by signal 9"):
        worker.fit(list(walk))


def test_forked_returns_an_array_or_a_one_line_error():
    job = forked.Forked(lambda: np.arange(100000.0).reshape(1000, 100))  # more than a pipe holds
    assert np.array_equal(job.result(), np.arange(100000.0).reshape(1000, 100))

    def fails():
        raise ValueError("bad window\nsecond line")

    with pytest.raises(DualPMError, match=r"^animate: the clip fit's second process failed \(ValueError: bad window\)$"):
        forked.Forked(fails).result()
    with pytest.raises(DualPMError, match=r"^preview: its forked copy failed \(ValueError: bad window\)$"):
        forked.Forked(fails, "preview: its forked copy").result()
    done = threading.Event()
    t = threading.Thread(target=done.wait)
    t.start()
    try:
        assert not forked.allowed()  # another thread runs: no fork
        assert not forked.allowed(forked.PIPE_READERS)
    finally:
        done.set()
        t.join()
    # The inference client's pipe readers (named) do not stop a fork when the caller says so.
    t = threading.Thread(target=done.wait, name=forked.PIPE_READERS[0])
    done.clear()
    t.start()
    try:
        assert not forked.allowed() and forked.allowed(forked.PIPE_READERS)
    finally:
        done.set()
        t.join()


def test_the_windows_halves_are_the_same_forked_or_not(templates_dir, horse, monkeypatch):
    """A span of 4 windows or more is swept in two halves and a seam window: in two processes
    where allowed, one after the other elsewhere, with the same result."""
    frames = clips.render_clip(templates_dir, "horse", "Walk", seed=2, count=13, backgrounds_dir=None)
    maps = [clips.exact_frame(f) for f in frames]
    opts = ClipOptions(fps=24.0, keyframes=2, window=3, overlap=1)
    assert len(maps) >= window.SPLIT_MIN_WINDOWS * opts.window
    calls = []
    real = forked.Forked

    def counted(fn):
        calls.append(1)
        return real(fn)

    monkeypatch.setattr(forked, "Forked", counted)
    both = fit_clip(maps, horse, opts)
    assert calls == [1]
    monkeypatch.setattr(forked, "allowed", lambda: False)
    one = fit_clip(maps, horse, opts)
    assert calls == [1]
    _same(both, one)
