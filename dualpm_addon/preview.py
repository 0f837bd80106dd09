"""A preview image without a GPU: the photo beside the reconstruction seen from a novel view.

Background Blender has no GPU context, and a Cycles render of a point cloud takes seconds, so the
batch command draws its preview here with numpy: points splatted as small discs through a
z-buffer (np.minimum.at over pixel indices, nearest point wins), shaded darker with depth, and
the fitted skeleton drawn on top. `write_png` is a stdlib (zlib) PNG writer, so neither Pillow
nor bpy is needed to save it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import camera
from .atomic import write_bytes
from .errors import DualPMError

BACKGROUND = (38, 40, 46)
BONE_COLOUR = (255, 200, 40)


def resize_nearest(img: np.ndarray, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    width = max(1, int(round(w * height / h)))
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(np.int64)
    return img[rows][:, cols]


def novel_view(points: np.ndarray, azimuth_deg: float = -35.0, elevation_deg: float = 18.0,
               size: int = 480, fill: float = 0.85, focal_mm: float = 50.0):
    """(world_to_camera 4x4, K) of a camera circling the points' centre in a Z-up model space.

    Azimuth 0 looks from +X (the animal's left side); -90 from -Y (its front)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = 0.5 * (lo + hi)
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    fov = 2 * np.arctan(18.0 / focal_mm)
    dist = radius / np.tan(0.5 * fill * fov)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = centre + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return camera.look_at(eye, centre), camera.intrinsics_from_focal_mm(focal_mm, size, size)


def splat(points_cam: np.ndarray, colours: np.ndarray, k: np.ndarray, size: int, radius_px: int = 2,
          image: np.ndarray | None = None) -> np.ndarray:
    """Draw camera-space points (N, 3) with uint8 colours (N, 3) as discs; the nearest wins."""
    img = np.empty((size, size, 3), np.uint8) if image is None else image
    if image is None:
        img[:] = BACKGROUND
    p = np.asarray(points_cam, dtype=np.float64)
    front = p[:, 2] > 1e-6
    p, colours = p[front], np.asarray(colours)[front]
    if not len(p):
        return img
    uv = camera.project(p, k)
    z = p[:, 2]
    # Depth cue: the far side of the body a third darker than the near side.
    zn = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    shaded = np.clip(colours.astype(np.float32) * (1.0 - 0.35 * zn)[:, None], 0, 255).astype(np.uint8)
    zbuf = np.full(size * size, np.inf)
    cu, cv = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    offsets = [(dx, dy) for dy in range(-radius_px, radius_px + 1) for dx in range(-radius_px, radius_px + 1)
               if dx * dx + dy * dy <= radius_px * radius_px + radius_px]
    cand_idx, cand_pt = [], []
    for dx, dy in offsets:
        u, v = cu + dx, cv + dy
        ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        cand_idx.append(v[ok] * size + u[ok])
        cand_pt.append(np.nonzero(ok)[0])
    idx, pt = np.concatenate(cand_idx), np.concatenate(cand_pt)
    np.minimum.at(zbuf, idx, z[pt])
    win = z[pt] <= zbuf[idx]
    flat = img.reshape(-1, 3)
    flat[idx[win]] = shaded[pt[win]]
    return img


def draw_segments(img: np.ndarray, a_cam: np.ndarray, b_cam: np.ndarray, k: np.ndarray,
                  colour=BONE_COLOUR, width_px: int = 1) -> np.ndarray:
    """Line segments between camera-space points (S, 3) drawn on top of everything."""
    size = img.shape[0]
    ua, ub = camera.project(a_cam, k), camera.project(b_cam, k)
    ok = (a_cam[:, 2] > 1e-6) & (b_cam[:, 2] > 1e-6)
    for p0, p1 in zip(ua[ok], ub[ok]):
        n = int(np.ceil(np.linalg.norm(p1 - p0))) + 2
        t = np.linspace(0.0, 1.0, n)[:, None]
        pts = np.floor(p0 + t * (p1 - p0)).astype(np.int64)
        for dx in range(-width_px + 1, width_px):
            for dy in range(-width_px + 1, width_px):
                u, v = pts[:, 0] + dx, pts[:, 1] + dy
                m = (u >= 0) & (u < size) & (v >= 0) & (v < img.shape[0])
                img[v[m], u[m]] = colour
    return img


def skeleton_segments(heads: np.ndarray, parents, keep=None) -> np.ndarray:
    """(S, 2, 3) parent-head to child-head segments; `keep` (J,) bool picks the joints drawn
    (e.g. only skinned bones, leaving out IK helpers that hang off the root)."""
    heads = np.asarray(heads, dtype=np.float64)
    keep = np.ones(len(heads), bool) if keep is None else np.asarray(keep, bool)
    segs = [(heads[p], heads[j]) for j, p in enumerate(parents) if p >= 0 and keep[j] and keep[p]]
    return np.array(segs, dtype=np.float64).reshape(-1, 2, 3)


def render(photo_rgb: np.ndarray, points_model: np.ndarray, colours: np.ndarray,
           segments: np.ndarray | None = None, height: int = 480, azimuth_deg: float = -35.0,
           elevation_deg: float = 18.0) -> np.ndarray:
    """The photo (scaled to `height`) beside a height x height novel view of the reconstruction.

    points_model (N, 3) and the skeleton's segments (S, 2, 3) are in the animal's Z-up model
    space (the fit's model_to_camera inverted), colours (N, 3) uint8."""
    photo_rgb = np.asarray(photo_rgb)
    points_model = np.asarray(points_model, dtype=np.float64)
    if photo_rgb.ndim != 3 or photo_rgb.shape[2] != 3:
        raise DualPMError(f"preview: photo has shape {photo_rgb.shape}, expected (H, W, 3)")
    if points_model.ndim != 2 or points_model.shape[1] != 3 or len(points_model) == 0:
        raise DualPMError(f"preview: points have shape {points_model.shape}, expected (N>0, 3)")
    left = resize_nearest(photo_rgb.astype(np.uint8), height)
    w2c, k = novel_view(points_model, azimuth_deg, elevation_deg, height)
    cam = points_model @ w2c[:3, :3].T + w2c[:3, 3]
    radius = max(1, int(round(height / 240)))
    right = splat(cam, colours, k, height, radius_px=radius)
    if segments is not None and len(segments):
        seg = np.asarray(segments, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        draw_segments(right, seg[:, 0], seg[:, 1], k, width_px=max(1, radius // 2 + 1))
    gap = np.empty((height, 4, 3), np.uint8)
    gap[:] = (0, 0, 0)
    return np.concatenate([left, gap, right], axis=1)


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W, 4) uint8 image (8-bit, no interlace, filter 0)."""
    img = np.ascontiguousarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise DualPMError(f"png: expected (H, W, 3|4) uint8, got {img.shape} {img.dtype}")
    h, w, c = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6 if c == 4 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_png(path: str, img: np.ndarray) -> None:
    """Write atomically: a `.partial` name until the bytes are all there."""
    write_bytes(path, encode_png(img))
