"""Pictures of the textured character without a GPU: through the photo's camera, from the side,
from behind, and posed by a frame of motion.

`render` draws a camera-space mesh with its atlas: a z-buffer (raster.zbuffer) gives each pixel
its face and barycentrics, the UV there looks the texture up (bilinear), and a soft headlight
(0.75 + 0.25 cos) shows the form without hiding the baked colours. `panels` lays out the
preview's character panels at one height; dualpm_addon/preview.py draws the rest.
"""

from __future__ import annotations

import numpy as np

from ..preview import BACKGROUND, novel_view
from . import raster

SIDE_AZIMUTH = 0.0  # from +X: the animal's left side (preview.novel_view's convention)
BEHIND_AZIMUTH = 90.0  # from +Y: the animal faces -Y, so this looks at its back
CLOSED_TOLERANCE = 1e-6  # relative: the character's two volumes differ by 1e-14 (facing)


def sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N, 3) float colours of an (S, S, 3) atlas at uv (N, 2) (v up, row 0 the top), bilinear."""
    s_h, s_w = image.shape[:2]
    x = np.clip(uv[:, 0] * s_w - 0.5, 0, s_w - 1)
    y = np.clip((1.0 - uv[:, 1]) * s_h - 0.5, 0, s_h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, s_w - 1), np.minimum(y0 + 1, s_h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def facing(vertices_cam: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Indices of the faces a z-buffer of the mesh needs: for a closed surface (the character,
    welded but for its UV seams) those that look at the camera, else all of them.

    A camera outside a closed surface sees, along each ray, where the ray enters it: a face that
    looks at the camera, its outward side told by the sign of the enclosed volume. The volume
    measured from the camera and from the mesh's centre agree only for a closed surface (a lone
    sheet's would not tell its sides apart), so that is the test. Dropping the other faces first
    halves the z-buffer's work (the preview's three views: 0.12 s of z-buffer before, 0.06 s
    after) and leaves the picture as it was (the Muybridge cat's four z-buffers: the same pixels
    covered, the same face at all but 0.01-0.05% of them, ties on shared edges)."""
    v = np.asarray(vertices_cam, np.float64)
    f = np.asarray(faces, np.int64)
    every = np.arange(len(f))
    if not len(f):
        return every
    tri = v[f]
    volume = np.einsum("ij,ij->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    c = tri - v[np.unique(f)].mean(axis=0)
    centred = np.einsum("ij,ij->", c[:, 0], np.cross(c[:, 1], c[:, 2]))
    if not np.isfinite(volume) or abs(volume - centred) > CLOSED_TOLERANCE * abs(centred) or centred == 0:
        return every
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return np.nonzero(np.sign(centred) * np.einsum("ij,ij->i", normal, tri[:, 0]) < 0)[0]


def render(vertices_cam: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: np.ndarray, intrinsics: np.ndarray,
           size, background=None, shade: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, coverage (H, W) bool): the textured mesh through the camera.
    `background`: an (H, W, 3) uint8 image to draw over, or a colour (default preview's)."""
    h, w = (int(v) for v in size)
    v = np.asarray(vertices_cam, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    front = facing(v, f)
    _, face, bary = raster.zbuffer(v, f[front], intrinsics, (h, w))
    if len(front):
        face = np.where(face >= 0, front[np.maximum(face, 0)], -1)
    if background is None or np.ndim(background) == 1:
        out = np.empty((h, w, 3), np.uint8)
        out[:] = BACKGROUND if background is None else background
    else:
        out = np.array(background, dtype=np.uint8, copy=True)
    hit = face >= 0
    if not hit.any():
        return out, hit
    fi, b = face[hit], bary[hit]
    tex_uv = np.einsum("nk,nkd->nd", b, np.asarray(uv, np.float64)[f[fi]])
    colour = sample(np.asarray(image), tex_uv)
    if shade:
        tri = v[f[fi]]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        p = np.einsum("nk,nkd->nd", b, tri)
        cos = np.abs(np.sum(n * p, 1)) / np.maximum(np.linalg.norm(n, axis=1) * np.linalg.norm(p, axis=1), 1e-12)
        colour = colour * (0.75 + 0.25 * cos)[:, None]
    out[hit] = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
    return out, hit


def model_view(vertices_model: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: np.ndarray,
               azimuth_deg: float, height: int, elevation_deg: float = 12.0) -> np.ndarray:
    """A height x height view of a model-space mesh (Z up) from azimuth/elevation (novel_view)."""
    w2c, k = novel_view(np.asarray(vertices_model, dtype=np.float64), azimuth_deg, elevation_deg, height)
    cam = vertices_model @ w2c[:3, :3].T + w2c[:3, 3]
    return render(cam, faces, uv, image, k, (height, height))[0]


def panels(character, photo_rgb: np.ndarray, intrinsics: np.ndarray, model_to_camera: np.ndarray,
           height: int = 480, animated_model: np.ndarray | None = None) -> list[np.ndarray]:
    """The character panels at `height`: through the photo's camera (over the photo, dimmed so
    the character stands out), from the side, from behind, and with `animated_model` (V, 3, model
    space: the mesh posed by a frame of motion) that pose from the side."""
    mesh, tex = character.mesh, character.texture.image
    photo_rgb = np.asarray(photo_rgb, dtype=np.uint8)
    ph, pw = photo_rgb.shape[:2]
    width = max(1, int(round(pw * height / ph)))
    from ..preview import resize_nearest

    bg = (resize_nearest(photo_rgb, height)[:, :width].astype(np.float32) * 0.45).astype(np.uint8)
    k = np.diag([width / pw, height / ph, 1.0]) @ np.asarray(intrinsics, dtype=np.float64)
    through, _ = render(character.posed_vertices, mesh.faces, mesh.uv, tex, k, (height, width), background=bg)
    m_inv = np.linalg.inv(model_to_camera)
    model = np.asarray(character.posed_vertices) @ m_inv[:3, :3].T + m_inv[:3, 3]
    out = [through, model_view(model, mesh.faces, mesh.uv, tex, SIDE_AZIMUTH, height),
           model_view(model, mesh.faces, mesh.uv, tex, BEHIND_AZIMUTH, height)]
    if animated_model is not None:
        out.append(model_view(np.asarray(animated_model, np.float64), mesh.faces, mesh.uv, tex, SIDE_AZIMUTH - 30,
                              height))
    return out

