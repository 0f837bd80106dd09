"""Every frame of a clip through preprocess.predict_photo, with the predictor's runs batched.

predict_photo finds, crops and checks one photo in two or more predictor runs, each depending
on the last. A clip has many frames: here up to `batch` of them run predict_photo at once, each
on a worker thread, against a stand-in predictor that only queues the crop; when every worker
is waiting, the queued crops go to the real predictor as one batch (split at its max_batch: the
server's limit), on the calling thread, and each worker gets its own result back. So the frames
see exactly what a photo sees (one implementation of finding the animal), and the model runs
on batches (fewer HTTP round trips, fuller cores).

Reusing the frames around it (predict_frames): every KEYFRAME_EVERY-th frame is found afresh
(predict_photo's two runs: the whole frame, then the crop); the frames between are cropped on the
box tracked from the keyframes on either side (predict_in_box: the crop's run only, with the same
checks and the same dict). An animal that reaches the tracked crop's edge is cropped once more
around what was seen of it; one lost there is found afresh. On Muybridge's walking cat that is
1.27 predictor runs a frame against predict_photo's 1.92 (docs/video.md).

A frame in which no animal is found (its one-line DualPMError) is None, with the reason kept;
the clip goes on. A failing predictor (the server died) or a cancel stops the clip.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import DualPMError

BATCH = 16  # frames in flight at once (and the largest batch a local Runner gets)
# Every KEYFRAME_EVERY-th frame is found afresh (predict_photo's two passes); the frames between
# are cropped on the box tracked from the keyframes around them: one predictor run instead of two.
KEYFRAME_EVERY = 6


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
        if len(parts) == 1:  # the usual case: no copy of the batch's maps (40 MB for 16 crops)
            return parts[0]
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


def run_batched(predictor, count: int, fn, batch: int = BATCH, report=None, cancelled=None):
    """(results, reasons, stats): fn(proxy, i) for i in range(count) on up to `batch` worker
    threads, whose proxy.predict calls reach `predictor` in batches. A DualPMError from fn is that
    item's reason (its result None); anything else, a failing predictor or a cancel stops all."""
    from .. import preprocess
    from ..pipeline import Cancelled

    results: list = [None] * count
    reasons: list = [""] * count
    if count == 0:
        return results, reasons, {"predictor_runs": 0, "crops": 0, "predictor_s": 0.0}
    workers = max(1, min(int(batch), count))
    input_size = preprocess.model_size(predictor)
    batcher = _Batcher(predictor, workers, min(max_batch_of(predictor), max(1, int(batch))))
    lock = threading.Lock()
    queue = iter(range(count))
    finished = [0]
    unexpected: list = []

    def work(slot: int):
        try:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                try:
                    results[i] = fn(_Proxy(batcher, (slot, i), input_size), i)
                except DualPMError as e:
                    reasons[i] = str(e)
                with lock:
                    finished[0] += 1
                    if report is not None:
                        report(finished[0] / count)
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
    return results, reasons, {"predictor_runs": batcher.runs, "crops": batcher.items,
                              "predictor_s": round(batcher.seconds, 4)}


def predict_in_box(predictor, rgb: np.ndarray, box, focal_mm: float | None = None, source: str = "the frame",
                   follow: bool = True) -> dict:
    """predict_photo's result for an unmasked frame whose crop box is already known (from the
    frames around it): its second pass only, with the same checks ("no animal found" below
    MIN_CROP_AREA_FRACTION of the crop) and the same dict (module docstring of preprocess).
    An animal that touches the crop's edge is cropped once more around what was seen of it
    (`follow`); touching the edge again is a DualPMError (the caller then finds it afresh)."""
    from .. import camera, pointmap, preprocess

    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    size = preprocess.model_size(predictor)
    crop = preprocess.crop_resize(rgb, box, size)
    result = predictor.predict(crop, np.full((size, size), 128, np.uint8))
    blob = preprocess.animal_blob(result, source, preprocess.MIN_CROP_AREA_FRACTION)
    if blob[0].any() or blob[-1].any() or blob[:, 0].any() or blob[:, -1].any():
        if not follow:
            raise DualPMError(f"{source}: the animal reaches the edge of the tracked crop")
        # The animal moved out of the tracked box: crop again around the part of it that was
        # seen (a box with the usual margin), once, before giving up on tracking this frame.
        box = preprocess.square_box(preprocess.grid_bbox_to_photo(blob, box))
        return predict_in_box(predictor, rgb, box, focal_mm, source, follow=False)
    occ0 = np.asarray(result["occupancy"], np.float64)[0]
    photo_mask = preprocess.grid_to_photo(occ0 * blob, box, (h, w)) > pointmap.OCCUPANCY_THRESHOLD
    focal_from_exif = focal_mm is not None and focal_mm > 0
    focal = float(focal_mm) if focal_from_exif else preprocess.DEFAULT_FOCAL_MM
    k_photo = camera.intrinsics_from_focal_mm(focal, w, h)
    out = {name: np.asarray(result[name], dtype=np.float32) for name in ("P", "Q", "occupancy", "confidence")}
    out.update({
        "intrinsics": camera.crop_intrinsics(k_photo, box, (size, size)).astype(np.float32),
        "crop_box": np.asarray(box, dtype=np.float32), "rgb": crop,
        "photo_size": np.array([h, w], dtype=np.int32), "focal_mm": np.float32(focal),
        "focal_from_exif": np.bool_(focal_from_exif), "photo_mask": np.asarray(photo_mask, bool),
        "mask_source": np.str_("predictor"), "animals_found": np.int32(1),
    })
    return pointmap.validate(out, source)


def animal_box(pm: dict) -> np.ndarray | None:
    """(cx, cy, side) of the square crop around a frame's animal outline (preprocess.square_box
    of its photo_mask), or None when the mask is empty."""
    from .. import preprocess

    m = np.asarray(pm["photo_mask"], bool)
    if not m.any():
        return None
    x0, y0, x1, y1 = preprocess.square_box(preprocess.mask_bbox(m))
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0])


def tracked_boxes(count: int, keys: list[int], boxes: dict) -> dict:
    """Crop boxes (x0, y0, x1, y1) for the frames between keyframes: centre and side interpolated
    linearly between the nearest keyframes with an animal (held beyond the first and the last)."""
    have = sorted(k for k in keys if boxes.get(k) is not None)
    out = {}
    if not have:
        return out
    key_set = set(keys)
    for i in range(count):
        if i in key_set:
            continue
        after = next((k for k in have if k >= i), None)
        before = next((k for k in reversed(have) if k <= i), None)
        if before is None or after is None:
            c = boxes[after if before is None else before]
        else:
            s = 0.0 if after == before else (i - before) / (after - before)
            c = (1 - s) * boxes[before] + s * boxes[after]
        cx, cy, side = (float(v) for v in c)
        out[i] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return out


def predict_frames(predictor, frames, masks=None, focal_mm: float | None = None, names=None,
                   batch: int = BATCH, segmenter=None, keyframe_every: int = KEYFRAME_EVERY,
                   report=None, cancelled=None, on_map=None) -> tuple[list, list, dict]:
    """(maps, reasons, stats): predict_photo's dict per frame (None where it found no animal, with
    the one-line reason in `reasons`), and stats (predictor runs, crops, seconds, frames tracked).

    frames (T, H, W, 3) uint8; masks a list of (H, W) bool or None per frame. Frames with a mask
    take predict_photo's one pass. The others: every `keyframe_every`-th (and the last) takes
    predict_photo's two passes (find, then crop); the frames between take only the crop pass, on
    the box tracked from the keyframes around them (tracked_boxes, predict_in_box); one whose
    animal is lost there or touches the crop's edge goes through predict_photo after all. With a
    segmenter or keyframe_every <= 1 every frame takes predict_photo. report(fraction) as frames
    finish; cancelled() stops the clip (pipeline.Cancelled). on_map(i, map) is called as soon as
    frame i's map is final (from a worker thread: it must be quick; fit.FrameObserver.submit)."""
    from .. import preprocess

    t = len(frames)
    masks = [None] * t if masks is None else list(masks)
    names = [f"frame {i + 1}" for i in range(t)] if names is None else list(names)
    maps: list = [None] * t
    reasons: list = [""] * t
    stats = {"predictor_runs": 0, "crops": 0, "predictor_s": 0.0, "frames_tracked_crop": 0, "frames_refound": 0}
    done = [0]

    def phase(indices, fn):
        def rep(_):
            if report is not None:
                report(min(1.0, (done[0] + 1) / t))
        res, why, st = run_batched(predictor, len(indices), lambda proxy, k: fn(proxy, indices[k]), batch,
                                   rep, cancelled)
        for k in ("predictor_runs", "crops", "predictor_s"):
            stats[k] += st[k]
        return res, why

    def final(i, m):
        if on_map is not None and m is not None:
            on_map(i, m)
        return m

    def full(proxy, i):
        return final(i, preprocess.predict_photo(proxy, frames[i], masks[i], focal_mm, names[i],
                                                 segmenter=segmenter if masks[i] is None else None))

    if segmenter is not None:
        # The segmenter runs on the workers' threads, each on every core already: more than two
        # at once only fight over the cores (7 at once took 1.8 s a frame, against 0.3 s alone).
        batch = min(int(batch), 2)
    unmasked = [i for i in range(t) if masks[i] is None]
    track = segmenter is None and keyframe_every > 1 and len(unmasked) > 2
    keys = sorted(set(unmasked[::keyframe_every]) | ({unmasked[-1]} if unmasked else set())) if track else unmasked
    first = sorted(set(keys) | {i for i in range(t) if masks[i] is not None})
    res, why = phase(first, full)
    for i, m, r in zip(first, res, why):
        maps[i], reasons[i] = m, r
    done[0] = len(first)
    if track:
        boxes = {i: animal_box(maps[i]) if maps[i] is not None else None for i in keys}
        between = tracked_boxes(t, keys, boxes)
        between = {i: b for i, b in between.items() if masks[i] is None}
        order = sorted(between)
        # a frame lost in its tracked crop raises there (and is found afresh below): what returns is final
        res, why = phase(order, lambda proxy, i: final(i, predict_in_box(proxy, frames[i], between[i], focal_mm,
                                                                          names[i])))
        retry = []
        for i, m, r in zip(order, res, why):
            if m is None:
                retry.append(i)
            maps[i] = m
        stats["frames_tracked_crop"] = len(order) - len(retry)
        done[0] += len(order) - len(retry)
        # Frames without a box (no keyframe found an animal) and frames lost in their tracked crop.
        retry = sorted(set(retry) | {i for i in unmasked if i not in set(keys) and i not in between})
        res, why = phase(retry, full)
        for i, m, r in zip(retry, res, why):
            maps[i], reasons[i] = m, r
        stats["frames_refound"] = len(retry)
    stats["predictor_s"] = round(stats["predictor_s"], 4)
    return maps, reasons, stats
