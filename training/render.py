"""Photo-like training images of a posed template: shading, backgrounds, shadows, camera effects.

Everything here is numpy (+ Pillow for resampling, blur and JPEG) and draws its randomness from
the Generator it is given, so an image is a pure function of its seed.

* Look: the template's material colours jittered in hue, saturation and brightness, sometimes a
  whole new coat colour; a procedural coat pattern (spots, stripes, patches) evaluated at the
  canonical point Q of each surface point, so it sticks to the body whatever the pose.
* Light: a sun (Lambert, with cast shadows from one extra Embree pass) plus a sky/ground
  hemisphere ambient, random directions and colours.
* Anti-aliasing: the first surface is cast through a 2x2 grid of sub-pixel positions and the
  shaded samples are box-filtered; coverage (hits / 4) blends the animal over the background.
* Background: a real landscape photo (random crop, scale, flip) or a procedural scene (sky
  gradient with clouds above the camera's true horizon, a perspective-correct textured ground
  below), with a soft contact shadow of the animal on the ground plane.
* Camera effects: occluders in front of the animal, colour jitter, blur, sensor noise, JPEG.

Colours are linear RGB until `linear_to_srgb` at the end of shading; backgrounds and photos are
sRGB and converted on the way in.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dualpm_addon.errors import DualPMError

SUPERSAMPLE = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# ------------------------------------------------------------------------------------------------
# Colour

def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _rgb_to_hsv(c: np.ndarray) -> np.ndarray:
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    mx, mn = c.max(axis=-1), c.min(axis=-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = np.where(d > 0, h, 0.0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return np.stack([h, s, mx], axis=-1)


def _hsv_to_rgb(c: np.ndarray) -> np.ndarray:
    h, s, v = c[..., 0] % 1.0, c[..., 1], c[..., 2]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(x, -1) for x in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(np.moveaxis(table, 0, -2), i[..., None, None], axis=-2)[..., 0, :]


# Coat colours of real quadrupeds (linear RGB): chestnut, bay, black, grey, cream, white, tan,
# dun, brindle brown, red fox, slate.
COAT_PALETTE = np.array([
    [0.25, 0.09, 0.03], [0.12, 0.05, 0.02], [0.015, 0.013, 0.012], [0.22, 0.22, 0.21],
    [0.62, 0.52, 0.36], [0.80, 0.78, 0.72], [0.45, 0.28, 0.12], [0.40, 0.32, 0.20],
    [0.08, 0.05, 0.03], [0.45, 0.14, 0.03], [0.10, 0.11, 0.12],
])

_NOT_COAT = ("eye", "hoof", "hoove", "horn", "nose", "pupil", "muzzle", "black")


def box_filter(img: np.ndarray, factor: int) -> np.ndarray:
    """Average factor x factor blocks (sums of strided slices: much faster than a strided mean)."""
    out = sum(img[i::factor, j::factor] for i in range(factor) for j in range(factor))
    return out / float(factor * factor)


# ------------------------------------------------------------------------------------------------
# Look: materials and coat pattern

@dataclass(frozen=True)
class Look:
    colors: np.ndarray  # (M, 3) linear RGB albedo per material
    coat: np.ndarray  # (M,) bool: materials the pattern applies to
    pattern: str  # none | spots | stripes | patches
    pattern_color: np.ndarray  # (3,) linear RGB
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # spots
    radius: float = 0.0
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (k, 4): direction*freq, phase
    threshold: float = 0.0
    softness: float = 0.02
    roughness: float = 0.0  # albedo noise amplitude


def coat_materials(template) -> np.ndarray:
    """Materials that are fur or hide: large ones whose names do not say eye, hoof, horn..."""
    m = len(template.material_names)
    v, f = template.vertices, template.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    share = np.bincount(template.face_material, weights=area, minlength=m) / max(area.sum(), 1e-12)
    named = np.array([not any(k in n.lower() for k in _NOT_COAT) for n in template.material_names])
    coat = named & (share > 0.03)
    if not coat.any():
        coat[int(np.argmax(share))] = True
    return coat


def sample_look(template, coat: np.ndarray, rng: np.random.Generator) -> Look:
    base = np.clip(np.asarray(template.material_colors, dtype=np.float64), 1e-4, 1.0)
    hsv = _rgb_to_hsv(base)
    if rng.uniform() < 0.35:
        # A new coat: every coat material takes a palette colour, keeping their relative shades.
        new = COAT_PALETTE[int(rng.integers(len(COAT_PALETTE)))]
        main = hsv[coat][np.argmax(coat[coat])] if coat.any() else hsv[0]
        target = _rgb_to_hsv(new)
        hsv[coat, 0] = target[0]
        hsv[coat, 1] = np.clip(target[1] * hsv[coat, 1] / max(main[1], 1e-3), 0, 1)
        hsv[coat, 2] = np.clip(target[2] * hsv[coat, 2] / max(main[2], 1e-3), 0, 1)
    hsv[:, 0] += rng.normal(0, 0.03) + rng.normal(0, 0.01, len(hsv))
    hsv[:, 1] = np.clip(hsv[:, 1] * rng.uniform(0.7, 1.3), 0, 0.85)  # fur is never fully saturated
    hsv[:, 2] = np.clip(hsv[:, 2] * np.exp(rng.normal(0, 0.35) + rng.normal(0, 0.08, len(hsv))), 0.003, 0.95)
    colors = _hsv_to_rgb(hsv)

    kind = ["none", "spots", "stripes", "patches"][int(rng.choice(4, p=[0.45, 0.2, 0.15, 0.2]))]
    lo, hi = template.canonical_vertices.min(axis=0), template.canonical_vertices.max(axis=0)
    size = float(np.max(hi - lo))
    pc = COAT_PALETTE[int(rng.integers(len(COAT_PALETTE)))] * np.exp(rng.normal(0, 0.2))
    look = dict(colors=colors, coat=coat, pattern=kind, pattern_color=np.clip(pc, 0.003, 0.95),
                roughness=float(rng.uniform(0.0, 0.25)), softness=float(rng.uniform(0.005, 0.03)) * size)
    if kind == "spots":
        n = int(rng.integers(15, 60))
        look["centres"] = lo + rng.uniform(size=(n, 3)) * (hi - lo)
        look["radius"] = float(rng.uniform(0.03, 0.09)) * size
    elif kind in ("stripes", "patches"):
        k = 1 if kind == "stripes" else 5
        dirs = rng.normal(size=(k, 3))
        if kind == "stripes":
            dirs[:, 2] *= 0.3  # mostly across the body, like a zebra's or a tiger's
            dirs[:, 1] += 2.0 * np.sign(rng.normal())
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freq = (rng.uniform(6, 14, k) if kind == "stripes" else rng.uniform(1.5, 5, k)) * 2 * np.pi / size
        look["waves"] = np.concatenate([dirs * freq[:, None], rng.uniform(0, 2 * np.pi, (k, 1))], axis=1)
        look["threshold"] = float(rng.uniform(-0.3, 0.5)) if kind == "patches" else float(rng.uniform(-0.2, 0.3))
    return Look(**look)


def _waves(q: np.ndarray, waves: np.ndarray) -> np.ndarray:
    return np.mean(np.sin(q @ waves[:, :3].T + waves[:, 3]), axis=1)


def pattern_weight(q: np.ndarray, look: Look) -> np.ndarray:
    """(n,) in [0, 1]: how much of the pattern colour covers canonical points q (n, 3)."""
    q = np.asarray(q, dtype=np.float64)
    if look.pattern == "spots":
        c = look.centres
        d2 = (q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * (q @ c.T)
        d = np.sqrt(np.maximum(d2.min(axis=1), 0))
        return np.clip((look.radius - d) / look.softness + 0.5, 0, 1)
    if look.pattern == "stripes":
        # A gentle warp by a second, slower wave keeps stripes from looking ruled.
        v = np.sin(q @ look.waves[0, :3] + look.waves[0, 3] + 1.5 * np.sin(q @ look.waves[0, [2, 0, 1]] * 0.3))
        return np.clip((v - look.threshold) / 0.15 + 0.5, 0, 1)
    if look.pattern == "patches":
        return np.clip((_waves(q, look.waves) - look.threshold * 0.5) / 0.08 + 0.5, 0, 1)
    return np.zeros(len(q))


def albedo(material: np.ndarray, q: np.ndarray, look: Look) -> np.ndarray:
    """(n, 3) linear albedo at surface points with material ids (n,) and canonical points (n, 3)."""
    base = look.colors[material]
    if look.pattern != "none":
        on = look.coat[material]
        wgt = pattern_weight(q[on], look)[:, None]
        base[on] = base[on] * (1 - wgt) + look.pattern_color * wgt
    if look.roughness > 0:
        # Fine fur-like variation, also fixed to Q.
        f = np.sin(q @ np.array([41.0, 17.0, 29.0]) * 2.3) + np.sin(q @ np.array([23.0, 47.0, 13.0]) * 2.3)
        base = base * (1 + 0.5 * look.roughness * f)[:, None]
    return np.clip(base, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Light

@dataclass(frozen=True)
class Light:
    sun: np.ndarray  # (3,) unit vector towards the sun, world
    sun_rgb: np.ndarray  # (3,)
    sky_rgb: np.ndarray  # (3,)
    ground_rgb: np.ndarray  # (3,)


def sample_light(rng: np.random.Generator) -> Light:
    az, el = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(15, 80))
    sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    warmth = rng.uniform(-0.15, 0.2)  # > 0: evening sun
    sun_rgb = rng.uniform(1.2, 3.2) * np.array([1 + warmth, 1.0, 1 - warmth])
    sky_rgb = rng.uniform(0.25, 0.8) * np.array([1 - 0.5 * warmth, 1.0, 1.1 + rng.uniform(0, 0.2)])
    ground_rgb = rng.uniform(0.08, 0.3) * np.array([1.0, rng.uniform(0.85, 1.05), rng.uniform(0.6, 0.9)])
    if rng.uniform() < 0.25:  # overcast: weak sun, bright flat sky
        sun_rgb *= 0.2
        sky_rgb *= 1.8
    return Light(sun=sun, sun_rgb=sun_rgb, sky_rgb=sky_rgb, ground_rgb=ground_rgb)


def shade(albedo_rgb: np.ndarray, normal: np.ndarray, up: np.ndarray, sun: np.ndarray,
          light: Light, lit: np.ndarray | None = None) -> np.ndarray:
    """Lambert sun plus hemisphere ambient; all vectors in one frame (camera space here)."""
    ndl = np.clip(normal @ sun, 0.0, None)
    if lit is not None:
        ndl = ndl * lit
    sky = 0.5 + 0.5 * (normal @ up)
    ambient = light.ground_rgb + (light.sky_rgb - light.ground_rgb) * sky[:, None]
    return albedo_rgb * (ndl[:, None] * light.sun_rgb + ambient)


# ------------------------------------------------------------------------------------------------
# Backgrounds

class Backgrounds:
    """Landscape photos from a folder (scripts/data/backgrounds.sh), decoded lazily and kept small.

    Listing is cheap, so a DataLoader worker can make its own; each photo is decoded once per
    process (JPEG draft mode decodes at reduced size directly) and cached at about 2x the
    largest crop it will serve.
    """

    def __init__(self, folder: str | None, max_side: int = 640):
        self.folder = folder
        self.max_side = max_side
        self.files: list[str] = []
        if folder:
            if not os.path.isdir(folder):
                raise DualPMError(f"{folder}: no such backgrounds folder")
            for root, _, names in os.walk(folder):
                self.files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
            self.files.sort()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            try:
                with Image.open(self.files[i]) as im:
                    im.draft("RGB", (self.max_side, self.max_side))
                    im = im.convert("RGB")
                    im.thumbnail((self.max_side, self.max_side), Image.BILINEAR)
                    self._cache[i] = np.asarray(im)
            except OSError as e:
                raise DualPMError(f"{self.files[i]}: not a readable image ({e})") from None
        return self._cache[i]

    def name(self, i: int) -> str:
        return os.path.relpath(self.files[i], self.folder)

    def crop(self, i: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """A random crop (at least 35 % of the shorter side), maybe mirrored, as float sRGB."""
        img = self.image(i)
        h, w = img.shape[:2]
        side = rng.uniform(0.35, 1.0) * min(h, w)
        ch, cw = side * min(1.0, height / width), side * min(1.0, width / height)
        y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        pil = Image.fromarray(img).resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        out = np.asarray(pil, dtype=np.float32) / 255.0
        return out[:, ::-1] if rng.uniform() < 0.5 else out


def ray_directions_world(intrinsics: np.ndarray, extrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) world-space directions of the pixel-centre rays (z = 1 in camera space)."""
    from .raycast import pixel_rays  # noqa: PLC0415

    return pixel_rays(intrinsics, (0, 0, width, height)) @ extrinsics[:3, :3]  # R^T d, row-wise


def _fractal(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Smooth pseudo-random field in [-1, 1]: random plane waves at doubling frequencies."""
    out = np.zeros_like(x)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        ang, ph = rng.uniform(0, np.pi, 3), rng.uniform(0, 2 * np.pi, 3)
        f = 2.0**o
        for a, p in zip(ang, ph):
            out += amp * np.sin(f * (np.cos(a) * x + np.sin(a) * y) + p)
        total += 3 * amp
        amp *= 0.55
    return out / total * 2.2


def _upsample(img: np.ndarray, height: int, width: int) -> np.ndarray:
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F")
                        .resize((width, height), Image.BILINEAR)) for c in range(img.shape[-1])]
    return np.stack(chans, axis=-1)


def procedural_background(rng: np.random.Generator, dirs_world: np.ndarray, camera_height: float) -> np.ndarray:
    """A sky and ground scene for rays (H, W, 3) world directions, float sRGB (H, W, 3).

    The horizon is where rays are level, so the scene agrees with the camera that sees the
    animal; the ground is textured in ground-plane coordinates (perspective-correct). Textures
    are evaluated on a 4x coarser grid and upsampled (they are smooth); the horizon is exact."""
    height, width = dirs_world.shape[:2]
    d_full = dirs_world / np.linalg.norm(dirs_world, axis=-1, keepdims=True)
    d = d_full[::4, ::4]
    dz = d[..., 2]
    horizon_rgb = rng.uniform(0.55, 0.95, 3)
    zenith_rgb = np.array([0.25, 0.45, 0.85]) * rng.uniform(0.6, 1.2) + rng.normal(0, 0.05, 3)
    if rng.uniform() < 0.3:  # dusk or overcast
        zenith_rgb = rng.uniform(0.3, 0.8, 3)
    up = np.clip(dz, 0, 1)[..., None] ** 0.6
    sky = horizon_rgb * (1 - up) + zenith_rgb * up
    lift = np.maximum(dz, 0.05)
    clouds = _fractal(d[..., 0] / lift * 2, d[..., 1] / lift * 2, rng)
    sky = sky + np.clip(clouds - rng.uniform(0.0, 0.6), 0, 1)[..., None] * 0.5

    palettes = np.array([[0.25, 0.38, 0.12], [0.45, 0.38, 0.22], [0.55, 0.50, 0.40], [0.85, 0.87, 0.90],
                         [0.30, 0.26, 0.20], [0.38, 0.42, 0.20], [0.62, 0.52, 0.32]])
    pick = rng.choice(len(palettes), 2, replace=False)
    c1, c2 = palettes[pick[0]], palettes[pick[1]]
    h = max(camera_height, 0.05)
    t = h / np.maximum(-dz, 1e-3)
    gx, gy = d[..., 0] * t, d[..., 1] * t
    scale = rng.uniform(0.3, 2.0)
    n1 = _fractal(gx * scale, gy * scale, rng)
    n2 = _fractal(gx * scale * 6, gy * scale * 6, rng, octaves=2)
    # Detail fades with distance instead of aliasing into noise near the horizon.
    n2 = n2 * np.clip(2.0 / np.maximum(t * scale, 1e-3), 0, 1)
    mix = np.clip(0.5 + 0.5 * n1, 0, 1)[..., None]
    ground = (c1 * (1 - mix) + c2 * mix) * (1 + 0.25 * n2[..., None])
    haze = np.clip(1 - np.exp(-t / rng.uniform(15, 80)), 0, 1)[..., None]
    ground = ground * (1 - haze) + horizon_rgb * 0.9 * haze
    sky, ground = _upsample(sky, height, width), _upsample(ground, height, width)
    out = np.where((d_full[..., 2] > 0)[..., None], sky, ground)
    out = out * (1 + rng.normal(0, 0.02, (height, width, 1)))  # grain
    if rng.uniform() < 0.15:  # sometimes just a studio-like gradient
        v = np.clip(d_full[..., 2:3], -1, 1)
        out = np.broadcast_to(rng.uniform(0.1, 0.9, 3), out.shape) * (0.85 + 0.15 * v)
    return np.clip(out, 0, 1).astype(np.float32)


def contact_shadow(dirs_world: np.ndarray, eye: np.ndarray, points_world: np.ndarray, sun: np.ndarray,
                   ground_z: float, softness: float) -> np.ndarray:
    """(H, W) in [0, 1]: a soft shadow of `points_world` on the plane z = ground_z.

    Points are projected onto the ground along the sun (nearer the ground, darker) and splatted
    into a small grid, blurred, and looked up where each pixel's ray meets the ground."""
    from scipy.ndimage import gaussian_filter, map_coordinates  # noqa: PLC0415

    p = np.asarray(points_world, dtype=np.float64)
    height = np.maximum(p[:, 2] - ground_z, 0.0)
    s = sun if sun[2] > 0.3 else np.array([sun[0], sun[1], 0.3])
    foot = p[:, :2] - height[:, None] * s[:2] / s[2]
    extent = max(float(np.ptp(p[:, 2])), float(np.ptp(p[:, 0])), float(np.ptp(p[:, 1])), 1e-3)
    weight = np.exp(-height / (0.35 * extent))
    n = 64
    lo = foot.min(axis=0) - 0.3 * extent
    span = float(np.max(foot.max(axis=0) + 0.3 * extent - lo))
    cell = span / n
    ij = np.clip(((foot - lo) / cell).astype(int), 0, n - 1)
    grid = np.zeros((n, n))
    np.add.at(grid, (ij[:, 0], ij[:, 1]), weight)
    grid = gaussian_filter(grid, sigma=max(softness * extent / cell, 0.8))
    grid /= max(np.quantile(grid[grid > 0], 0.9) if np.any(grid > 0) else 1.0, 1e-12)
    grid = np.clip(grid, 0, 1)
    dz = dirs_world[..., 2]
    t = (ground_z - eye[2]) / np.where(dz < -1e-6, dz, -1e-6)
    gx = eye[0] + dirs_world[..., 0] * t
    gy = eye[1] + dirs_world[..., 1] * t
    coords = np.stack([(gx - lo[0]) / cell - 0.5, (gy - lo[1]) / cell - 0.5])
    out = map_coordinates(grid, coords.reshape(2, -1), order=1, mode="constant", cval=0.0).reshape(dz.shape)
    return np.where(dz < -1e-6, out, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Occluders and camera effects (uint8 sRGB in, uint8 sRGB out)

def occluders(rgb: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None,
              count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1-3 shapes in front of the animal (posts, branches, rocks, grass); returns the image
    and the occluder mask (H, W) bool. Shapes are drawn at 2x and downsampled (anti-aliased)."""
    h, w = rgb.shape[:2]
    s = 2
    layer = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(layer)
    n = int(rng.integers(1, 4)) if count is None else count
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    else:
        box = (0, 0, w, h)
    for _ in range(n):
        kind = int(rng.integers(4))
        cx, cy = rng.uniform(box[0], box[2]) * s, rng.uniform(box[1], box[3]) * s
        size = rng.uniform(0.1, 0.35) * max(box[2] - box[0], box[3] - box[1]) * s
        if kind == 0:  # post or trunk: a near-vertical bar
            a = rng.normal(0, 0.15)
            dx, dy = np.sin(a) * h * s, np.cos(a) * h * s
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=max(2, int(size * 0.35)))
        elif kind == 1:  # branch: a thin line at any angle
            a = rng.uniform(0, np.pi)
            dx, dy = np.cos(a) * size * 2, np.sin(a) * size * 2
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=max(2, int(size * 0.12)))
        elif kind == 2:  # rock or bush: an irregular blob
            k = int(rng.integers(6, 12))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = size * rng.uniform(0.5, 1.0, k)
            draw.polygon(list(zip(cx + r * np.cos(ang), cy + r * np.sin(ang) * 0.7)), fill=255)
        else:  # grass: blades rising from the bottom edge
            base_y = h * s
            for _ in range(int(rng.integers(8, 30))):
                x = rng.uniform(box[0], box[2]) * s
                top = base_y - rng.uniform(0.1, 0.45) * h * s
                lean = rng.normal(0, 0.1) * h * s
                bw = rng.uniform(1, 3) * s
                draw.polygon([(x - bw, base_y), (x + bw, base_y), (x + lean, top)], fill=255)
    alpha = np.asarray(layer.resize((w, h), Image.BOX), dtype=np.float32) / 255.0
    if not np.any(alpha > 0):
        return rgb, np.zeros((h, w), dtype=bool)
    # Colour: sampled from the image itself (a piece of the same scene), darkened, with texture.
    yy, xx = int(rng.integers(h)), int(rng.integers(w))
    base = rgb[yy, xx].astype(np.float32) * rng.uniform(0.35, 0.9)
    tex = 1 + 0.15 * _fractal(*np.meshgrid(np.arange(w) / 6.0, np.arange(h) / 6.0), rng, octaves=3)
    col = np.clip(base[None, None, :] * tex[..., None], 0, 255)
    out = rgb.astype(np.float32) * (1 - alpha[..., None]) + col * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha > 0.5


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, blur, sensor noise and JPEG artefacts, each applied at random."""
    x = rgb.astype(np.float32) / 255.0
    # Colour jitter as one affine map: brightness, contrast, saturation, a small hue rotation.
    b = rng.uniform(0.75, 1.25)
    c = rng.uniform(0.75, 1.25)
    sat = rng.uniform(0.6, 1.3)
    hue = rng.normal(0, 0.05)
    lum = np.array([0.299, 0.587, 0.114])
    cos, sin = np.cos(hue * 2 * np.pi), np.sin(hue * 2 * np.pi)
    rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]]) @ np.diag([1, sat, sat])
    m = _FROM_YIQ @ rot @ _TO_YIQ
    mean = float((x.reshape(-1, 3) @ lum).mean())
    x = ((x @ m.T) - mean) * c + mean
    x = x * b
    img = Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8))
    if rng.uniform() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    out = np.asarray(img, dtype=np.float32)
    if rng.uniform() < 0.5:
        out = out + rng.normal(0, rng.uniform(1.0, 6.0), out.shape)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.5:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(30, 96)))
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im.convert("RGB"))
    return out
