"""The clip's preview: the video beside the rig drawn over it, frame by frame, as NAME.mp4.

Each frame is [the video frame | the frame with the fitted rig's outline and bones through its
camera] (dualpm_addon.preview.overlay_panel, the photo path's middle panel). A frame the fit
bridged (the animal lost there, its pose interpolated) gets an orange border on its overlay, so
the artist sees where the motion is made up. Encoded with PyAV (H.264, yuv420p: plays in
browsers and every video player); written under a temporary name and renamed when complete.

`write_video` also writes the clip's own frames (the .blend's camera background), and `strip`
makes a picture strip of a few overlay frames for the docs.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction

import numpy as np

from ..errors import DualPMError

BRIDGED_COLOUR = (255, 140, 0)
CRF = "20"  # H.264 quality: visually clean at these small sizes, a few hundred kB per clip
# x264's fastest preset: the 10 s benchmark clip's preview encodes in 0.2 s instead of veryfast's
# 0.8 s (2 cores, load 3.5), for 2.4 MB instead of 1.7 at the same quality setting
PRESET = "ultrafast"


def _even(img: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column where one is odd."""
    h, w = img.shape[:2]
    if h % 2:
        img = np.concatenate([img, img[-1:]], axis=0)
    if w % 2:
        img = np.concatenate([img, img[:, -1:]], axis=1)
    return img


def write_video(path: str, frames, fps: float, crf: str = CRF, preset: str = PRESET) -> str:
    """Encode an iterable of (H, W, 3) uint8 frames (one size) as H.264 into `path` (.mp4),
    atomically: PATH.partial while it is written, removed if anything fails."""
    try:
        import av
    except ImportError:
        raise DualPMError("writing video needs PyAV, which is not installed here (pip install av)") from None
    tmp = f"{path}.partial"
    rate = Fraction(float(fps)).limit_denominator(100000)
    try:
        with av.open(tmp, mode="w", format="mp4") as out:
            stream = None
            for img in frames:
                img = _even(np.ascontiguousarray(img, dtype=np.uint8))
                if stream is None:
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = img.shape[1], img.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"preset": preset, "crf": crf}
                elif (img.shape[0], img.shape[1]) != (stream.height, stream.width):
                    raise DualPMError(f"{os.path.basename(path)}: frames change size while writing")
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            if stream is None:
                raise DualPMError(f"{os.path.basename(path)}: no frames to write")
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise DualPMError(f"{path}: cannot write video ({e.strerror or e})") from None
        raise
    return path


def skinned_joints(skin_joints, skin_weights, num_joints: int) -> np.ndarray:
    """(J,) bool: joints that move some vertex (bones worth drawing; IK helpers are not)."""
    sj, sw = np.asarray(skin_joints), np.asarray(skin_weights)
    return np.bincount(sj[sw > 0], minlength=num_joints)[:num_joints] > 0


def overlay_frame(rgb: np.ndarray, clip, t: int, keep=None) -> np.ndarray:
    """Frame t with the rig drawn over it (bridged frames framed in orange)."""
    from .. import preview

    img = preview.overlay_panel(rgb, clip.posed_vertices(t), clip.faces, clip.intrinsics[t],
                                joints_cam=clip.joints_cam[t], parents=clip.parents, keep=keep)
    if clip.bridged[t]:
        b = max(2, img.shape[0] // 60)
        img[:b], img[-b:], img[:, :b], img[:, -b:] = BRIDGED_COLOUR, BRIDGED_COLOUR, BRIDGED_COLOUR, BRIDGED_COLOUR
    return img


def side_by_side(frames: np.ndarray, clip, ts=None):
    """Yield [frame | overlay] per frame of the clip (or of the frame numbers `ts`)."""
    keep = skinned_joints(clip.skin_joints, clip.skin_weights, len(clip.joint_names))
    gap = np.full((frames.shape[1], 4, 3), 30, np.uint8)
    for t in range(len(frames)) if ts is None else ts:
        yield np.concatenate([frames[t], gap, overlay_frame(frames[t], clip, t, keep)], axis=1)


FORK_MIN_FRAMES = 24  # a preview this long draws its second half in a forked copy (video/forked.py)
FORK_MAX_BYTES = 512 << 20  # ... when that half's frames are no more than this to send back


def write_preview(path: str, frames: np.ndarray, clip, fps: float) -> str:
    """NAME.mp4: the video beside the rig's overlay, frame by frame.

    Where forking is allowed (forked.allowed: one thread, Linux, not Blender's UI) the second
    half's frames are drawn in a copy of this process while this one draws and encodes the
    first: the same file, on two cores."""
    from . import forked

    n = len(frames)
    if n != clip.num_frames:
        raise DualPMError(f"preview: {n} frames but the fit has {clip.num_frames}")
    mid = n // 2
    half = (n - mid) * frames.shape[1] * (2 * frames.shape[2] + 4) * 3
    job = None
    if n >= FORK_MIN_FRAMES and half <= FORK_MAX_BYTES and forked.allowed():
        job = forked.Forked(lambda: np.stack(list(side_by_side(frames, clip, range(mid, n)))),
                            "animate: the preview's second process")

    def second():  # awaited only once the first half is encoded
        yield from job.result()

    try:
        if job is None:
            return write_video(path, side_by_side(frames, clip), fps)
        return write_video(path, itertools.chain(side_by_side(frames, clip, range(mid)), second()), fps)
    finally:
        if job is not None:
            job.kill()


def strip(frames: np.ndarray, clip, count: int = 6, height: int = 160) -> np.ndarray:
    """A picture strip: `count` evenly spaced overlay frames side by side, `height` pixels tall."""
    from .. import preview

    keep = skinned_joints(clip.skin_joints, clip.skin_weights, len(clip.joint_names))
    idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    tiles = [preview.resize_nearest(overlay_frame(frames[t], clip, t, keep), height) for t in idx]
    gap = np.full((height, 4, 3), 255, np.uint8)
    out = []
    for i, tile in enumerate(tiles):
        out += ([gap] if i else []) + [tile]
    return np.concatenate(out, axis=1)
