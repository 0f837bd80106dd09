"""Video in: a clip's frames as (T, H, W, 3) uint8 sRGB, from a video file or an image sequence.

    clip = decode.read(path, start=None, end=None, fps=None)

`path` is one of
  * a video file (mp4, mov, webm, mkv, avi, ...: whatever FFmpeg reads), decoded with PyAV (`av`
    on PyPI, whose wheels bundle FFmpeg); only the file protocol is allowed, so a playlist or
    a crafted file never makes FFmpeg reach the network;
  * a folder of images (every .png/.jpg/... in it except NAME.mask.png masks, in natural order:
    frame2 before frame10);
  * a printf pattern such as `shots/frame_%04d.png` (the numbers found on disk, in order);
  * a single image (a one-frame clip: a still).

`start`/`end` are seconds on the source's clock (for a sequence: frame index / its rate), `fps`
resamples: for each tick of 1/fps the first source frame within half a source frame of it is kept
(the nearest, give or take; frames are never made up, so `fps` may not exceed the source's rate).
An image sequence has no clock: it plays at `fps` (default SEQUENCE_FPS), one frame per tick.

Frames larger than MAX_SIDE on their longer side are decoded at a reduced size (FFmpeg's area
scaler, so a 4K clip costs what a small one does after decoding and is never refused): the model
sees a 160-pixel crop of the animal either way. `Clip.scale` says by how much.

Bad input is a one-line DualPMError naming the file and the reason: not a video, corrupt or
truncated, no video stream, no frames (also: none between start and end), an absurd frame rate
(below MIN_FPS or above MAX_FPS), frames that change size, more than MAX_FRAMES frames.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import DualPMError

MAX_SIDE = 640  # decoded frames' longer side at most (the predictor works on 160-pixel crops)
MIN_FPS = 0.1  # a frame rate outside [MIN_FPS, MAX_FPS] is a broken header, not a video
MAX_FPS = 1000.0
MAX_FRAMES = 1800  # frames kept at most (150 s at 12 fps; ~1.2 GB at 640 x 360)
SEQUENCE_FPS = 24.0  # an image sequence's rate unless --fps says otherwise
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr", ".hdr", ".tga")
MASK_SUFFIX = ".mask.png"
# A stream whose frames end this far before its declared duration was cut short.
TRUNCATED_FRACTION = 0.9


@dataclass
class Clip:
    """A decoded clip: `frames` (T, H, W, 3) uint8 at `size` (H, W), the source's frames being
    `source_size`; `times` (T,) seconds on the source's clock, `numbers` (T,) the source frame
    each came from, counted from 1 as `ffmpeg -i VIDEO %06d.png` numbers them (for a sequence:
    its position in the sequence); `names` (T,) a name per frame for mask lookup (a sequence's
    file stems, else the 6-digit number)."""

    path: str
    kind: str  # "video", "sequence" or "image"
    frames: np.ndarray
    times: np.ndarray
    numbers: np.ndarray
    names: list
    fps: float  # the clip's rate: frame k is shown at k / fps
    source_fps: float
    source_size: tuple
    size: tuple
    duration: float  # the source's length in seconds
    codec: str = ""
    files: list = field(default_factory=list)  # a sequence's image files, one per frame
    rotation: int = 0  # degrees counter-clockwise the stored frames were turned to be upright

    @property
    def scale(self) -> float:
        """Decoded pixels per source pixel (1.0 when decoded at full size)."""
        return self.size[1] / self.source_size[1]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def summary(self) -> dict:
        return {"path": os.path.abspath(self.path), "kind": self.kind, "codec": self.codec, "frames": len(self),
                "fps": round(float(self.fps), 6), "source_fps": round(float(self.source_fps), 6),
                "source_size": [int(self.source_size[1]), int(self.source_size[0])],
                "decoded_size": [int(self.size[1]), int(self.size[0])],
                "start_s": round(float(self.times[0]), 6), "end_s": round(float(self.times[-1]), 6),
                "duration_s": round(float(self.duration), 6), "rotation_deg": int(self.rotation)}


def reduced_size(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(H, W) no longer than max_side on the longer side, aspect kept, even sizes (encoders want
    them); the size itself when it already fits."""
    longer = max(height, width)
    if longer <= max_side:
        return int(height), int(width)
    s = max_side / longer
    return max(2, int(round(height * s / 2)) * 2), max(2, int(round(width * s / 2)) * 2)


def quarter_turns(rotation) -> int:
    """Quarter turns counter-clockwise (0-3, as np.rot90's k) that show a frame upright, from its
    display matrix's rotation (PyAV's VideoFrame.rotation: degrees the display turns the stored
    frame counter-clockwise). A phone's portrait video is stored landscape with -90: a quarter
    turn clockwise, as FFmpeg's players turn it. Angles between quarter turns go to the nearest."""
    try:
        r = float(rotation or 0.0)
    except (TypeError, ValueError):
        return 0
    return int(round(r / 90.0)) % 4 if np.isfinite(r) else 0


def check_range(start, end, fps) -> None:
    """One-line errors for --start/--end/--fps that cannot work, before anything is decoded."""
    for name, v in (("--start", start), ("--end", end)):
        if v is not None and (not np.isfinite(v) or v < 0):
            raise DualPMError(f"{name} {v}: expected seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise DualPMError(f"--end {end} is not after --start {start}")
    if fps is not None and (not np.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS):
        raise DualPMError(f"--fps {fps}: expected a frame rate between {MIN_FPS:g} and {MAX_FPS:g}")


def read(path, start: float | None = None, end: float | None = None, fps: float | None = None,
         max_side: int = MAX_SIDE, max_frames: int = MAX_FRAMES, report=None, cancelled=None) -> Clip:
    """Decode `path` (module docstring); report(fraction) as frames arrive, cancelled() checked
    between frames (it raises pipeline.Cancelled)."""
    check_range(start, end, fps)
    path = os.fspath(path)
    kind, files = classify(path)
    if kind == "video":
        return _read_video(path, start, end, fps, max_side, max_frames, report, cancelled)
    return _read_images(path, kind, files, start, end, fps, max_side, max_frames, report, cancelled)


# -- what the path is ------------------------------------------------------------------------------


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_image(name: str) -> bool:
    low = name.lower()
    return low.endswith(IMAGE_EXTENSIONS) and not low.endswith(MASK_SUFFIX)


_PATTERN = re.compile(r"%(0?)(\d*)d")


def is_pattern(path: str) -> bool:
    return len(_PATTERN.findall(os.path.basename(path))) == 1


def pattern_files(pattern: str) -> list[str]:
    """The files matching a printf pattern (one %d or %0Nd in the file name), by number."""
    folder, base = os.path.split(pattern)
    m = _PATTERN.search(base)
    pad, width = m.group(1), m.group(2)
    digits = rf"\d{{{int(width)}}}" if pad and width else (rf"\d{{{int(width)},}}" if width else r"\d+")
    rx = re.compile(re.escape(base[:m.start()]) + f"({digits})" + re.escape(base[m.end():]) + r"\Z")
    folder = folder or "."
    if not os.path.isdir(folder):
        raise DualPMError(f"{pattern}: no such folder {folder}")
    found = []
    for name in os.listdir(folder):
        hit = rx.match(name)
        if hit and os.path.isfile(os.path.join(folder, name)):
            found.append((int(hit.group(1)), os.path.join(folder, name)))
    return [p for _, p in sorted(found)]


def classify(path: str) -> tuple[str, list[str]]:
    """("video" | "sequence" | "image", image files): what `path` names, or a one-line error."""
    if os.path.isdir(path):
        files = sorted((n for n in os.listdir(path) if _is_image(n) and os.path.isfile(os.path.join(path, n))),
                       key=_natural_key)
        if not files:
            raise DualPMError(f"{path}: a folder with no images in it (an image sequence needs "
                              f"{', '.join(IMAGE_EXTENSIONS[:3])}... files)")
        return "sequence", [os.path.join(path, n) for n in files]
    if not os.path.exists(path) and is_pattern(path):
        files = pattern_files(path)
        if not files:
            raise DualPMError(f"{path}: no files match this pattern")
        return "sequence", files
    if not os.path.exists(path):
        raise DualPMError(f"{path}: no such file or folder")
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: not a regular file")
    if _is_image(path):
        return "image", [path]
    return "video", []


# -- video files --------------------------------------------------------------------------------


def _import_av():
    try:
        import av
    except ImportError:
        raise DualPMError("reading video needs PyAV, which is not installed here (pip install av; the "
                          "extension ships it)") from None
    return av


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    # PyAV puts "[Errno N] " and the file name in its messages; the caller names the file itself.
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text).split(": '")[0]


def _rate(stream) -> float | None:
    for r in (getattr(stream, "average_rate", None), getattr(stream, "guessed_rate", None),
              getattr(stream, "base_rate", None)):
        if r:
            v = float(r)
            if np.isfinite(v) and v > 0:
                return v
    return None


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000.0  # AV_TIME_BASE
    return None


def _read_video(path, start, end, fps, max_side, max_frames, report, cancelled) -> Clip:
    av = _import_av()
    name = os.path.basename(path)
    try:
        container = av.open(path, mode="r", options={"protocol_whitelist": "file"})
    except av.FFmpegError as e:
        raise DualPMError(f"{name}: not a video FFmpeg can read: corrupt, truncated or empty "
                          f"({_first_line(e)})") from None
    with container:
        if not container.streams:
            raise DualPMError(f"{name}: no frames: the file holds no streams at all (an empty video)")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise DualPMError(f"{name}: has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: 4K h264 decodes on every core
        codec = stream.codec_context.name if stream.codec_context else ""
        source_fps = _rate(stream)
        if source_fps is None:
            raise DualPMError(f"{name}: the video states no frame rate")
        if not MIN_FPS <= source_fps <= MAX_FPS:
            raise DualPMError(f"{name}: frame rate {source_fps:.6g} fps is absurd (outside {MIN_FPS:g} to "
                              f"{MAX_FPS:g} fps): a broken header, or no clip of a moving animal")
        if fps is not None and fps > source_fps * 1.001:
            raise DualPMError(f"--fps {fps:g} is above the video's {source_fps:.6g} fps (frames are not made up)")
        duration = _duration(container, stream)
        step = 1.0 / (fps if fps is not None else source_fps)
        t_begin = 0.0 if start is None else float(start)
        if start:
            try:  # to the key frame before start; frames before start are then skipped
                container.seek(int(start / float(stream.time_base)), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        frames, times, numbers = [], [], []
        size = source_size = None
        next_tick = None
        decoded = turns = 0
        last_time = None
        try:
            for frame in container.decode(stream):
                decoded += 1
                t = _frame_time(frame, stream, decoded, source_fps)
                if last_time is not None and t <= last_time - 1e-9:
                    t = last_time + 1.0 / source_fps  # broken timestamps: keep decode order
                last_time = t
                shape = (frame.height, frame.width)
                if source_size is None:
                    source_size = shape
                    size = reduced_size(*shape, max_side)
                    # The stream's display matrix: the clip is the frames as a player shows them.
                    turns = quarter_turns(getattr(frame, "rotation", 0))
                elif shape != source_size:
                    raise DualPMError(f"{name}: frames change size at {t:.3f} s ({source_size[1]}x{source_size[0]} "
                                      f"to {shape[1]}x{shape[0]})")
                if t < t_begin - 0.5 / source_fps:
                    continue
                if end is not None and t > end + 1e-9:
                    break
                if next_tick is None:
                    next_tick = t
                if t < next_tick - 0.5 / source_fps:
                    continue  # between two ticks of the requested rate
                next_tick = max(next_tick + step, t + step - 0.5 / source_fps) if fps is not None else t + step
                if len(frames) >= max_frames:
                    raise DualPMError(f"{name}: more than {max_frames} frames to fit; choose a part with "
                                      f"--start/--end or fewer with --fps")
                img = frame.reformat(width=size[1], height=size[0], format="rgb24",
                                     interpolation="AREA" if size != source_size else None).to_ndarray()
                frames.append(np.ascontiguousarray(np.rot90(img, turns) if turns else img, dtype=np.uint8))
                times.append(t)
                numbers.append(int(round(t * source_fps)) + 1)  # from the clock: right after a seek too
                if report is not None and duration:
                    report(min(1.0, (t - t_begin) / max(1e-9, (end or duration) - t_begin)))
                if cancelled is not None and cancelled():
                    from ..pipeline import Cancelled

                    raise Cancelled("cancelled")
        except av.FFmpegError as e:
            where = f"after {times[-1]:.3f} s" if times else "at its first frame"
            raise DualPMError(f"{name}: corrupt or truncated video, decoding failed {where} "
                              f"({_first_line(e)})") from None
        if not frames:
            if decoded == 0:
                raise DualPMError(f"{name}: the video stream has no frames")
            raise DualPMError(f"{name}: no frames between {t_begin:g} s and "
                              f"{'the end' if end is None else f'{end:g} s'} (the video is "
                              f"{(last_time or 0.0) + 1.0 / source_fps:.3f} s long)")
        if end is None and duration and decoded > 0 and last_time is not None:
            # A stream that stops well short of its declared length was cut off (a copy that
            # did not finish): the motion would silently end early.
            covered = last_time + 1.0 / source_fps
            if covered < TRUNCATED_FRACTION * duration - 1.0 / source_fps:
                raise DualPMError(f"{name}: truncated video: frames stop at {covered:.3f} s of the "
                                  f"{duration:.3f} s the file declares")
    clip_fps = float(fps) if fps is not None else source_fps
    if turns % 2:  # sizes of the upright frames
        source_size, size = source_size[::-1], size[::-1]
    return Clip(path=path, kind="video", frames=np.stack(frames), times=np.asarray(times, np.float64),
                numbers=np.asarray(numbers, np.int64), names=[f"{n:06d}" for n in numbers], fps=clip_fps,
                source_fps=source_fps, source_size=tuple(source_size), size=tuple(size),
                duration=float(duration) if duration else float(times[-1] + 1.0 / source_fps), codec=codec,
                rotation=90 * turns)


def _frame_time(frame, stream, index: int, rate: float) -> float:
    if frame.pts is not None and stream.time_base:
        start = stream.start_time or 0
        return float((frame.pts - start) * stream.time_base)
    return (index - 1) / rate


# -- image sequences ------------------------------------------------------------------------------


def _read_images(path, kind, files, start, end, fps, max_side, max_frames, report, cancelled) -> Clip:
    from PIL import Image

    from .. import image_io

    rate = float(fps) if fps is not None else SEQUENCE_FPS
    n = len(files)
    first = 0 if start is None else int(np.ceil(start * rate - 1e-9))
    last = n - 1 if end is None else min(n - 1, int(np.floor(end * rate + 1e-9)))
    if first > last:
        raise DualPMError(f"{path}: no frames between {start or 0:g} s and "
                          f"{'the end' if end is None else f'{end:g} s'} (the sequence is {n} frames, "
                          f"{n / rate:.3f} s at {rate:g} fps)")
    picked = list(range(first, last + 1))
    if len(picked) > max_frames:
        raise DualPMError(f"{path}: more than {max_frames} frames to fit; choose a part with --start/--end")
    frames, source_size, size = [], None, None
    for i, idx in enumerate(picked):
        photo = image_io.read_photo(files[idx], at_least=max_side)  # a large JPEG decodes small
        rgb = photo.rgb
        shape = photo.full_size or rgb.shape[:2]
        if source_size is None:
            source_size, size = shape, reduced_size(*shape, max_side)
        elif shape != source_size:
            raise DualPMError(f"{path}: frames change size at {os.path.basename(files[idx])} "
                              f"({source_size[1]}x{source_size[0]} to {shape[1]}x{shape[0]})")
        if size != rgb.shape[:2]:
            rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BOX), np.uint8)
        frames.append(rgb)
        if report is not None:
            report((i + 1) / len(picked))
        if cancelled is not None and cancelled():
            from ..pipeline import Cancelled

            raise Cancelled("cancelled")
    chosen = [files[i] for i in picked]
    return Clip(path=path, kind=kind, frames=np.stack(frames), times=np.asarray(picked, np.float64) / rate,
                numbers=np.asarray(picked, np.int64) + 1,
                names=[os.path.splitext(os.path.basename(f))[0] for f in chosen], fps=rate, source_fps=rate,
                source_size=source_size, size=size, duration=n / rate, codec="images", files=chosen)


# -- masks ------------------------------------------------------------------------------------------


def frame_masks(clip: Clip, mask_dir: str | None) -> tuple[list, list]:
    """(masks, paths) per frame: DIR/NAME.mask.png for the frame's name (a sequence's file stem,
    a video's 6-digit source frame number, as `ffmpeg -i VIDEO DIR/%06d.png` names frames), at
    the source's size or the decoded size, resized to the decoded size; None where there is none."""
    if not mask_dir:
        return [None] * len(clip), [None] * len(clip)
    if not os.path.isdir(mask_dir):
        raise DualPMError(f"--mask-dir {mask_dir}: no such folder")
    from PIL import Image

    from .. import image_io

    masks, paths = [], []
    for name in clip.names:
        p = os.path.join(mask_dir, name + MASK_SUFFIX)
        if not os.path.isfile(p):
            masks.append(None)
            paths.append(None)
            continue
        m = image_io.read_mask(p)
        if m.shape not in (tuple(clip.source_size), tuple(clip.size)):
            raise DualPMError(f"mask {os.path.basename(p)} is {m.shape[1]}x{m.shape[0]}, the video's frames are "
                              f"{clip.source_size[1]}x{clip.source_size[0]}")
        if m.shape != tuple(clip.size):
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
                (clip.size[1], clip.size[0]), Image.Resampling.BOX)) >= 128
        masks.append(np.asarray(m, bool))
        paths.append(p)
    return masks, paths

