"""Real video files for the tests, written with PyAV from real photos (nothing is committed).

`pan_zoom` makes a clip of a still animal filmed by a camera that pans and zooms: crops of a
photo that slide and shrink, resampled to one size. `write_video` encodes frames with a real
encoder (libx264, libvpx-vp9, mpeg4, mjpeg...) into a real container.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from tests.conftest import ROOT

PHOTOS = os.path.join(ROOT, ".cache", "photos")
BACKGROUNDS = os.path.join(ROOT, ".cache", "backgrounds")
CAT = os.path.join(PHOTOS, "muybridge_cat.png")


def read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def pan_zoom(rgb: np.ndarray, n: int, size=(120, 180), pan: float = 0.08, zoom: float = 0.12,
             pad: float = 0.25) -> np.ndarray:
    """(n, H, W, 3): a camera panning by `pan` of the photo's width and zooming in by `zoom` over
    the clip, around the photo padded by `pad` of its size with its border colour (so the animal
    stays whole in every frame)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    ph, pw = int(h * pad), int(w * pad)
    edge = np.median(np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]), axis=0).astype(np.uint8)
    canvas = np.empty((h + 2 * ph, w + 2 * pw, 3), np.uint8)
    canvas[:] = edge
    canvas[ph:ph + h, pw:pw + w] = rgb
    im = Image.fromarray(canvas)
    out_h, out_w = size
    aspect = out_w / out_h
    frames = []
    for i in range(n):
        s = i / max(n - 1, 1)
        # Smooth in and out (a camera operator's move), so the motion has no corners.
        s = 0.5 - 0.5 * np.cos(np.pi * s)
        ch, cw = canvas.shape[:2]
        bw = min(cw - pan * w, ch * aspect) * (1.0 - zoom * s)
        bh = bw / aspect
        cx = cw / 2 + (s - 0.5) * pan * w
        cy = ch / 2
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        frames.append(np.asarray(im.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box), np.uint8))
    return np.stack(frames)


def landscapes(n: int, size=(120, 180)) -> np.ndarray:
    """(n, H, W, 3): a slow pan over a landscape photo with no animal in it (Debian wallpapers)."""
    path = None
    for root, _, files in sorted(os.walk(BACKGROUNDS)):
        for f in sorted(files):
            if f.lower().endswith((".jpg", ".png")):
                path = os.path.join(root, f)
                break
        if path:
            break
    if path is None:
        raise FileNotFoundError(f"no landscape photos in {BACKGROUNDS} (run scripts/setup.sh)")
    return pan_zoom(read_rgb(path), n, size, pan=0.2, zoom=0.1, pad=0.0)


def write_video(path: str, frames: np.ndarray, fps=12, codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: dict | None = None) -> str:
    """Encode (T, H, W, 3) uint8 frames into `path` (the container from its extension)."""
    import av

    frames = np.asarray(frames, np.uint8)
    rate = Fraction(fps).limit_denominator(100000)
    with av.open(path, mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        elif codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: str, seconds: float = 0.5) -> str:
    """A real audio file (AAC in .m4a / .mp4) with no video stream."""
    import av

    rate = 16000
    with av.open(path, mode="w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        n = int(rate * seconds)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, n, frame_size):
            chunk = samples[:, i:i + frame_size]
            if chunk.shape[1] < frame_size:
                chunk = np.pad(chunk, ((0, 0), (0, frame_size - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_empty_video(path: str, size=(64, 96)) -> str:
    """A container with a video stream and no frames in it."""
    import av

    with av.open(path, mode="w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height = size[1], size[0]
        stream.pix_fmt = "yuv420p"
        out.start_encoding()  # the header, though no packet follows
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_changing_size(path: str, fps: int = 12) -> str:
    """An MJPEG stream in Matroska whose frames change size half-way (each MJPEG packet is a
    picture of its own, as after splicing two recordings without re-encoding)."""
    import av

    first = pan_zoom(read_rgb(CAT), 3, (80, 120))
    second = pan_zoom(read_rgb(CAT), 3, (96, 144))
    with av.open(path, mode="w") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height = 120, 80
        stream.pix_fmt = "yuvj420p"
        pts = 0
        for frames in (first, second):
            enc = av.CodecContext.create("mjpeg", "w")
            enc.width, enc.height = frames.shape[2], frames.shape[1]
            enc.pix_fmt = "yuvj420p"
            enc.time_base = Fraction(1, fps)
            for img in frames:
                vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
                vf.pts = pts
                vf.time_base = Fraction(1, fps)
                for packet in enc.encode(vf):
                    packet.stream = stream
                    packet.pts = packet.dts = pts
                    packet.time_base = Fraction(1, fps)
                    out.mux(packet)
                pts += 1
            for packet in enc.encode():
                packet.stream = stream
                out.mux(packet)
    return path


def truncate(path: str, keep: float = 0.5) -> str:
    """Cut a file to `keep` of its bytes, as a copy that did not finish."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
    return path
