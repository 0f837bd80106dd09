"""Every frame of a clip through preprocess.predict_photo, with the predictor's runs batched.

predict_photo finds, crops and checks one photo in two or more predictor runs, each depending
on the last. A clip has many frames: here up to `batch` of them run predict_photo at once, each
on a worker thread, against a stand-in predictor that only queues the crop; when every worker
is waiting, the queued crops go to the real predictor as one batch (split at its max_batch: the
server's limit), on the calling thread, and each worker gets its own result back. So the frames
see exactly what a photo sees (one implementation of finding the animal), and the model runs
on batches (fewer HTTP round trips, fuller cores).

A frame in which predict_photo finds no animal (its one-line DualPMError) is None, with the
reason kept; the clip goes on. A failing predictor (the server died) or a cancel stops the clip.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import DualPMError

BATCH = 16  # frames in flight at once (and the largest batch a local Runner gets)


class _PredictorFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class _Cancelled(Exception):
    pass


class _Batcher:
    """Queues workers' predict() calls; serve() runs them in batches on the calling thread."""

    def __init__(self, predictor, workers: int, max_batch: int):
        self.predictor = predictor
        self.max_batch = max(1, int(max_batch))
        self.cv = threading.Condition()
        self.pending: dict = {}
        self.results: dict = {}
        self.active = workers
        self.failed: BaseException | None = None
        self.cancelled = False
        self.runs = 0
        self.items = 0
        self.seconds = 0.0

    def predict(self, key, image, mask):
        with self.cv:
            if self.failed is not None:
                raise _PredictorFailed(self.failed)
            if self.cancelled:
                raise _Cancelled()
            self.pending[key] = (image, mask)
            self.cv.notify_all()
            while key not in self.results:
                self.cv.wait()
            out = self.results.pop(key)
        if isinstance(out, BaseException):
            raise _PredictorFailed(out) if not isinstance(out, _Cancelled) else out
        return out

    def done(self):
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def serve(self, cancelled=None):
        while True:
            with self.cv:
                while self.active > 0 and len(self.pending) < self.active:
                    self.cv.wait(0.05)
                    if cancelled is not None and cancelled():
                        break
                if self.active == 0 and not self.pending:
                    return
                if cancelled is not None and cancelled():
                    self.cancelled = True
                    for key in self.pending:
                        self.results[key] = _Cancelled()
                    self.pending = {}
                    self.cv.notify_all()
                    continue
                if not self.pending:
                    continue
                work, self.pending = self.pending, {}
            keys = list(work)
            try:
                out = self._run([work[k] for k in keys])
                replies = {k: {name: v[i] for name, v in out.items()} for i, k in enumerate(keys)}
            except BaseException as e:  # noqa: BLE001 - handed to the workers, re-raised by the caller
                with self.cv:
                    self.failed = e
                replies = {k: e for k in keys}
            with self.cv:
                self.results.update(replies)
                self.cv.notify_all()

    def _run(self, items):
        t0 = time.perf_counter()
        images = np.stack([np.asarray(im, np.uint8) for im, _ in items])
        size = images.shape[1:3]
        masks = np.stack([np.full(size, 128, np.uint8) if m is None else _mask_uint8(m) for _, m in items])
        parts = []
        for i in range(0, len(items), self.max_batch):
            parts.append(self.predictor.predict(images[i:i + self.max_batch], masks[i:i + self.max_batch]))
        self.runs += len(parts)
        self.items += len(items)
        self.seconds += time.perf_counter() - t0
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _mask_uint8(m) -> np.ndarray:
    m = np.asarray(m)
    return m.astype(np.uint8) * 255 if m.dtype == bool else m.astype(np.uint8)


class _Proxy:
    """What predict_photo sees as its predictor: one worker's view of the batcher."""

    def __init__(self, batcher: _Batcher, key, input_size: int):
        self.batcher, self.key, self.input_size = batcher, key, input_size

    def predict(self, image_uint8, mask_uint8=None):
        return self.batcher.predict(self.key, image_uint8, mask_uint8)


def max_batch_of(predictor, default: int = BATCH) -> int:
    """The predictor's batch limit: a v2 server's max_batch (model metadata), else `default`."""
    meta = getattr(predictor, "metadata", None) or {}
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    try:
        return max(1, int(params.get("max_batch") or default))
    except (TypeError, ValueError):
        return default


def predict_frames(predictor, frames, masks=None, focal_mm: float | None = None, names=None,
                   batch: int = BATCH, segmenter=None, report=None, cancelled=None) -> tuple[list, list, dict]:
    """(maps, reasons, stats): predict_photo's dict per frame (None where it found no animal, with
    the one-line reason in `reasons`), and stats {"predictor_runs", "crops", "predictor_s"}.

    frames (T, H, W, 3) uint8; masks a list of (H, W) bool or None per frame (None: the predictor's
    own mask, or the segmenter's); report(fraction) as frames finish; cancelled() stops the clip
    (pipeline.Cancelled)."""
    from .. import preprocess
    from ..pipeline import Cancelled

    t = len(frames)
    masks = [None] * t if masks is None else list(masks)
    names = [f"frame {i + 1}" for i in range(t)] if names is None else list(names)
    maps: list = [None] * t
    reasons: list = [""] * t
    workers = max(1, min(int(batch), t))
    input_size = preprocess.model_size(predictor)
    batcher = _Batcher(predictor, workers, min(max_batch_of(predictor), max(1, int(batch))))
    lock = threading.Lock()
    queue = iter(range(t))
    finished = [0]
    unexpected: list = []

    def work(slot: int):
        try:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                proxy = _Proxy(batcher, (slot, i), input_size)
                try:
                    maps[i] = preprocess.predict_photo(proxy, frames[i], masks[i], focal_mm, names[i],
                                                       segmenter=segmenter if masks[i] is None else None)
                except DualPMError as e:
                    reasons[i] = str(e)
                with lock:
                    finished[0] += 1
                    if report is not None:
                        report(finished[0] / t)
        except (_PredictorFailed, _Cancelled):
            return
        except BaseException as e:  # noqa: BLE001 - a bug, not a frame without an animal: re-raised below
            unexpected.append(e)
        finally:
            batcher.done()

    threads = [threading.Thread(target=work, args=(s,), name=f"dualpm-frame-{s}", daemon=True)
               for s in range(workers)]
    for th in threads:
        th.start()
    try:
        batcher.serve(cancelled)
    finally:
        for th in threads:
            th.join()
    if batcher.failed is not None:
        raise batcher.failed
    if unexpected:
        raise unexpected[0]
    if batcher.cancelled:
        raise Cancelled("cancelled")
    stats = {"predictor_runs": batcher.runs, "crops": batcher.items, "predictor_s": round(batcher.seconds, 4)}
    return maps, reasons, stats
