"""A preview image without a GPU: the photo, the rig over the photo, and a novel view.

Background Blender has no GPU context, and a Cycles render of a point cloud takes seconds, so the
batch command draws its preview here with numpy: points splatted as small discs through a
z-buffer (np.minimum.at over pixel indices, nearest point wins), shaded darker with depth, and
the fitted skeleton drawn on top. Given the fitted surface and the photo's intrinsics, a panel
between the two shows the photo with the rig seen through the photo's own camera: the surface's
silhouette (silhouette.rasterize) lightly tinted with its outline in a bright colour, and the
bones on top. "Does it line up?" is the artist's first question, and this panel answers it.
`write_png` is a stdlib (zlib) PNG writer, so neither Pillow nor bpy is needed to save it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import camera, silhouette
from .atomic import write_bytes
from .errors import DualPMError

BACKGROUND = (38, 40, 46)
BONE_COLOUR = (255, 200, 40)
OUTLINE_COLOUR = (0, 255, 255)  # cyan: stands out on fur, grass and sky, and from the yellow bones
TINT = 0.18  # how much of the outline colour fills the silhouette: the photo stays readable


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
    height, width = img.shape[:2]
    ua, ub = camera.project(a_cam, k), camera.project(b_cam, k)
    ok = (a_cam[:, 2] > 1e-6) & (b_cam[:, 2] > 1e-6)
    p0, p1 = ua[ok], ub[ok]
    if not len(p0):
        return img
    # every segment's samples at once: the values np.linspace(0, 1, n) gives each (one call per
    # bone per frame was most of a clip preview's bone drawing)
    n = np.ceil(np.linalg.norm(p1 - p0, axis=1)).astype(np.int64) + 2
    seg = np.repeat(np.arange(len(n)), n)
    local = np.arange(len(seg)) - np.repeat(np.cumsum(n) - n, n)
    t = local * (1.0 / (n - 1))[seg]
    t[np.cumsum(n) - 1] = 1.0
    pts = np.floor(p0[seg] + t[:, None] * (p1 - p0)[seg]).astype(np.int64)
    for dx in range(-width_px + 1, width_px):
        for dy in range(-width_px + 1, width_px):
            u, v = pts[:, 0] + dx, pts[:, 1] + dy
            m = (u >= 0) & (u < width) & (v >= 0) & (v < height)
            img[v[m], u[m]] = colour
    return img


def skeleton_segments(heads: np.ndarray, parents, keep=None) -> np.ndarray:
    """(S, 2, 3) parent-head to child-head segments; `keep` (J,) bool picks the joints drawn
    (e.g. only skinned bones, leaving out IK helpers that hang off the root)."""
    heads = np.asarray(heads, dtype=np.float64)
    keep = np.ones(len(heads), bool) if keep is None else np.asarray(keep, bool)
    segs = [(heads[p], heads[j]) for j, p in enumerate(parents) if p >= 0 and keep[j] and keep[p]]
    return np.array(segs, dtype=np.float64).reshape(-1, 2, 3)


def overlay_panel(photo_rgb: np.ndarray, vertices_cam: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray,
                  height: int | None = None, joints_cam: np.ndarray | None = None, parents=None,
                  keep=None) -> np.ndarray:
    """The photo (scaled to `height`, default its own) with the rig drawn through its camera.

    vertices_cam (V, 3) the posed surface in the photo's camera space (OpenCV, metres), faces
    (F, 3), intrinsics (3, 3) in the photo's pixels; joints_cam (J, 3) with parents (J,) draws
    the bones (`keep` as in skeleton_segments)."""
    photo_rgb = np.asarray(photo_rgb)
    if photo_rgb.ndim != 3 or photo_rgb.shape[2] != 3:
        raise DualPMError(f"preview: photo has shape {photo_rgb.shape}, expected (H, W, 3)")
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise DualPMError(f"preview: intrinsics have shape {k.shape}, expected (3, 3)")
    h, w = photo_rgb.shape[:2]
    img = resize_nearest(photo_rgb.astype(np.uint8), int(height or h)).copy()
    # Continuous pixel coordinates scale with the image (pixel edges stay on integers).
    k = np.diag([img.shape[1] / w, img.shape[0] / h, 1.0]) @ k
    sil = silhouette.rasterize(vertices_cam, faces, k, img.shape[:2])
    tinted = img[sil].astype(np.float32) * (1.0 - TINT) + np.array(OUTLINE_COLOUR, np.float32) * TINT
    img[sil] = np.clip(tinted, 0, 255).astype(np.uint8)
    img[silhouette.outline(sil, max(2, int(round(img.shape[0] / 240))))] = OUTLINE_COLOUR
    if joints_cam is not None and parents is not None:
        seg = skeleton_segments(joints_cam, parents, keep)
        if len(seg):
            draw_segments(img, seg[:, 0], seg[:, 1], k, width_px=max(1, int(round(img.shape[0] / 480)) + 1))
    return img


def overlay(photo_rgb: np.ndarray, reconstruction, height: int | None = None) -> np.ndarray:
    """overlay_panel of a pipeline.Reconstruction: its fitted surface and bones (skinned bones
    only, as the novel view draws them) through its photo_intrinsics."""
    photo_rgb = np.asarray(photo_rgb)
    rec, fit = reconstruction, reconstruction.fit
    if tuple(photo_rgb.shape[:2]) != tuple(int(v) for v in rec.photo_size):
        raise DualPMError(f"preview: photo is {photo_rgb.shape[1]}x{photo_rgb.shape[0]} but the reconstruction's "
                          f"camera is for {rec.photo_size[1]}x{rec.photo_size[0]}")
    tpl, n = rec.template, fit.rest_skeleton.num_joints
    skinned = np.bincount(tpl.skin_joints[tpl.skin_weights > 0], minlength=n)[:n] > 0
    return overlay_panel(photo_rgb, fit.posed_vertices, fit.faces, rec.photo_intrinsics, height,
                         fit.joints, fit.rest_skeleton.parents, skinned)


def render(photo_rgb: np.ndarray, points_model: np.ndarray, colours: np.ndarray,
           segments: np.ndarray | None = None, height: int = 480, azimuth_deg: float = -35.0,
           elevation_deg: float = 18.0, overlay_vertices: np.ndarray | None = None,
           overlay_faces: np.ndarray | None = None, overlay_joints: np.ndarray | None = None,
           parents=None, intrinsics: np.ndarray | None = None, overlay_keep=None) -> np.ndarray:
    """The photo (scaled to `height`) beside a height x height novel view of the reconstruction;
    with overlay_vertices (V, 3), overlay_faces and intrinsics, the overlay panel in between.

    points_model (N, 3) and the skeleton's segments (S, 2, 3) are in the animal's Z-up model
    space (the fit's model_to_camera inverted), colours (N, 3) uint8. The overlay's arrays are in
    the photo's camera space: the fit's posed_vertices, faces, joints (with parents, and
    overlay_keep as skeleton_segments' keep) and the photo's intrinsics (3, 3, photo pixels)."""
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
    gap = np.zeros((height, 4, 3), np.uint8)
    panels = [left, gap]
    if overlay_vertices is not None:
        if overlay_faces is None or intrinsics is None:
            raise DualPMError("preview: the overlay needs overlay_faces and intrinsics with overlay_vertices")
        panels += [overlay_panel(photo_rgb, overlay_vertices, overlay_faces, intrinsics, height,
                                 overlay_joints, parents, overlay_keep), gap]
    return np.concatenate(panels + [right], axis=1)


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
