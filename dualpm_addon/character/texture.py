"""The photo's colours baked into the character's UV atlas.

Every texel of the atlas is a point on the character's surface (the texel map: which face, which
barycentrics; `texel_map`). Its colour comes, in order of trust:

1. **The photo** (source PHOTO): the texel's posed point projected through the fitted camera,
   when a z-buffer of the posed mesh says nothing is in front of it, it lands inside the photo and
   on the animal's mask (eroded by a pixel, so no background creeps in along the outline). The
   photo is sampled bilinearly in linear RGB. Each sample carries a weight: how squarely its
   surface faces the camera (|cos| of the angle between the smooth normal and the view ray),
   zero at grazing angles, where a photo smears one pixel over a long stretch of surface.
2. **Its mirror twin** (MIRROR): the animal is left/right symmetric in canonical space, so a
   texel at canonical (x, y, z) may borrow the photo colour of the texel nearest (-x, y, z). A
   grazing photo texel blends with its twin by their weights (the twin at half trust), so the
   squarely seen side wins and the edge of the seen region fades instead of stepping.
3. **The nearest coloured region** (FILL): what neither side saw (the belly of an animal seen
   from above, the inside of the legs) takes the inverse-distance mean of the nearest coloured
   texels in canonical space: across charts, so a seam never shows.
4. **The gutter** (GUTTER): texels outside every chart take the nearest chart texel's colour,
   so bilinear filtering and mipmaps never fetch the empty background across a chart's border.

UV convention: uv (V, 2) in [0, 1], v up (Blender's); image row 0 is the top (v = 1), as PNG and
glTF store it. Colours are sRGB uint8 in the image, linear inside the bake.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import camera
from ..errors import DualPMError
from . import light, raster

SIZE = 512  # atlas side in texels: ~100k surface texels on a horse, enough for a 160-px crop
ZBUFFER_SIDE = 384  # z-buffer side over the animal's box in the photo: visibility, not colour
MIN_COS = 0.15  # below this |cos| a photo sample has no weight (grazing view)
TWIN_TRUST = 0.5  # a mirror twin's weight relative to the texel's own photo sample
DEPTH_TOLERANCE = 0.01  # of the mesh's size: a texel this far behind the z-buffer is hidden
FILL_NEIGHBOURS = 4
FILL_SOURCES = 20000  # coloured texels the fill draws from, at most
MIN_PHOTO_TEXELS = 20  # fewer photo-coloured texels than this and the photo says nothing usable
DELIGHT_MODES = ("off", "auto", "on", "first-order")
AUTO_SPREAD = 0.17  # `auto` takes the light out when a first-order fit's log shading ranges this far (10th-90th pct)

NONE, PHOTO, MIRROR, FILL, GUTTER, FLAT = 0, 1, 2, 3, 4, 5
SOURCE_NAMES = {NONE: "none", PHOTO: "photo", MIRROR: "mirror", FILL: "fill", GUTTER: "gutter", FLAT: "flat"}


@dataclass(frozen=True)
class TexelMap:
    """The atlas texels that lie on the surface: pixel (N,) flat index row * size + col, face
    (N,) and bary (N, 3) of the surface point at the texel's centre."""

    size: int
    pixel: np.ndarray
    face: np.ndarray
    bary: np.ndarray

    def points(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(N, D) per-vertex values (V, D) interpolated at the texels."""
        f = np.asarray(faces)[self.face]
        v = np.asarray(vertices, dtype=np.float64)
        return np.einsum("nk,nkd->nd", self.bary, v[f])


@dataclass
class Texture:
    """image (S, S, 3) uint8 sRGB (row 0 the top, v = 1); source (S, S) uint8 (NONE, PHOTO,
    MIRROR, FILL, GUTTER, FLAT per texel); figures: shares per source, timings, a note."""

    image: np.ndarray
    source: np.ndarray
    figures: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb8(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    s = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(s * 255.0 + 0.5, 0, 255).astype(np.uint8)


_LUT = srgb_to_linear(np.arange(256) / 255.0)


def texel_map(uv: np.ndarray, faces: np.ndarray, size: int = SIZE) -> TexelMap:
    """Which face covers each atlas texel's centre (the first, where charts overlap)."""
    uv = np.asarray(uv, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if uv.ndim != 2 or uv.shape[1] != 2 or (faces.size and faces.max() >= len(uv)):
        raise DualPMError(f"texture: uv has shape {uv.shape}, expected one (u, v) per vertex")
    if int(size) < 8:
        raise DualPMError(f"texture: atlas size {size} is below 8 texels")
    size = int(size)
    tri = uv[faces] * size
    tri[..., 1] = size - tri[..., 1]  # v up -> image rows down
    pix, t, bary = raster.cover(tri, (size, size))
    pix, first = np.unique(pix, return_index=True)
    return TexelMap(size, pix, t[first], bary[first])


def _vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth normals; vertices split at UV seams share one (welded by position)."""
    _, weld = np.unique(np.round(v, 7), axis=0, return_inverse=True)
    weld = weld.reshape(-1)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # area-weighted
    idx = weld[faces.reshape(-1)]
    n = np.stack([np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=weld.max() + 1) for c in range(3)], 1)
    n = n[weld]
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _bilinear(photo: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N, 3) linear RGB of an sRGB uint8 photo at continuous pixel coordinates uv (N, 2)."""
    h, w = photo.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(y.astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    c00, c01 = _LUT[photo[y0, x0]], _LUT[photo[y0, x1]]
    c10, c11 = _LUT[photo[y1, x0]], _LUT[photo[y1, x1]]
    return (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy


def _visible(p: np.ndarray, vertices_cam: np.ndarray, faces: np.ndarray, k: np.ndarray, photo_size) -> np.ndarray:
    """(N,) bool: no surface in front of the texel points p (N, 3) as the camera sees them. The
    z-buffer covers only the mesh's box in the photo, at most ZBUFFER_SIDE pixels a side."""
    h, w = photo_size
    uv = camera.project(vertices_cam[vertices_cam[:, 2] > raster.NEAR], k)
    if not len(uv):
        return np.zeros(len(p), bool)
    x0, y0 = np.maximum(np.floor(uv.min(0)), 0)
    x1, y1 = np.minimum(np.ceil(uv.max(0)), (w, h))
    if x1 <= x0 or y1 <= y0:
        return np.zeros(len(p), bool)
    scale = min(1.0, ZBUFFER_SIDE / max(x1 - x0, y1 - y0))
    zh, zw = max(1, int(np.ceil((y1 - y0) * scale))), max(1, int(np.ceil((x1 - x0) * scale)))
    kz = np.diag([scale, scale, 1.0]) @ (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ k)
    depth, _, _ = raster.zbuffer(vertices_cam, faces, kz, (zh, zw))
    q = camera.project(p, kz)
    col, row = np.floor(q[:, 0]).astype(np.int64), np.floor(q[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < zw) & (row >= 0) & (row < zh) & (p[:, 2] > raster.NEAR)
    tol = DEPTH_TOLERANCE * float(np.linalg.norm(np.ptp(vertices_cam, axis=0)))
    d = np.full(len(p), np.inf)
    d[inside] = depth[row[inside], col[inside]]
    # A texel mapped onto an empty z-buffer pixel sits on the outline: nothing is in front of it.
    return inside & (p[:, 2] <= d + tol)


def _towards_camera(normal: np.ndarray, ray: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals turned to face the camera (a texel's ray from it is `ray`)."""
    n = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return np.where((np.sum(n * ray, axis=1) > 0)[:, None], -n, n)


def _shading(colour: np.ndarray, normal: np.ndarray, ray: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(N,) the photo's shading at seen texels, mean 1: log luminance fitted (weighted least
    squares, one robust reweighting) by a first-order function of the camera-space normal (the
    low-frequency light a sun and a sky cast on a convex body); albedo varies too fast over a
    coat to be explained by the normal alone."""
    n = _towards_camera(normal, ray)
    y = np.log(np.maximum(colour @ np.array([0.2126, 0.7152, 0.0722]), 1e-4))
    basis = np.concatenate([np.ones((len(n), 1)), n], axis=1)
    w = np.asarray(weight, dtype=np.float64).copy()
    for _ in range(2):
        sw = np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(basis * sw, y * sw[:, 0], rcond=None)
        r = y - basis @ coef
        scale = 1.4826 * np.median(np.abs(r)) + 1e-6
        w = weight * np.minimum(1.0, 1.5 * scale / np.maximum(np.abs(r), 1e-12))  # Huber
    s = basis[:, 1:] @ coef[1:]
    s = s - np.average(s, weights=np.maximum(weight, 1e-12))
    return np.exp(np.clip(s, np.log(0.25), np.log(4.0)))


def _delight_mode(delight) -> str:
    if delight is True or delight is False:
        return "on" if delight else "off"
    if delight not in DELIGHT_MODES:
        raise DualPMError(f"texture: unknown delight {delight!r}; one of {', '.join(DELIGHT_MODES)}")
    return str(delight)


def _delight(own, seen, n, ray, w_own, p, pixel, size, v, faces, mode: str) -> dict:
    """Divide the seen texels' colours `own` (N, 3, in place) by the photo's fitted shading;
    the figures of what was fitted and done ({} for "off"). "on" and "auto": the sky, sun and
    cast shadows of character/light.py, then what is left of a first-order dependence on the
    normal (`_shading`: the light the model misses where the fit's normals are off); "auto" only
    where a first-order fit of the texel pairs says the light varies (light.estimate's
    first_spread >= AUTO_SPREAD; a cheap test, so even light costs little)."""
    if mode == "off":
        return {}
    t0 = time.perf_counter()
    idx = np.nonzero(seen)[0]
    if mode == "first-order":
        own[idx] /= _shading(own[idx], n[idx], ray[idx], w_own[idx])[:, None]
        return {"mode": mode, "applied": True, "seconds": round(time.perf_counter() - t0, 4)}
    fit = light.estimate(own[idx], _towards_camera(n[idx], ray[idx]), w_own[idx], p[idx], pixel[idx], size, v, faces,
                         min_spread=AUTO_SPREAD if mode == "auto" else 0.0)
    if fit is None:
        return {"mode": mode, "applied": False, "note": "too few texels seen together to fit a light",
                "seconds": round(time.perf_counter() - t0, 4)}
    fitted, shading = fit
    applied = mode == "on" or fitted.first_spread >= AUTO_SPREAD
    if applied:
        own[idx] /= np.clip(shading, 0.1, 10.0)[:, None]
        own[idx] /= _shading(own[idx], n[idx], ray[idx], w_own[idx])[:, None]
    return {"mode": mode, "applied": bool(applied), **fitted.figures(), "seconds": round(time.perf_counter() - t0, 4)}


def _twins(texels: TexelMap, c: np.ndarray, seen: np.ndarray, mirrored_atlas: bool):
    """(twin (N,) index of each texel's mirror twin among the texels, has (N,) bool: the twin
    exists and the photo saw it)."""
    n, s = len(c), texels.size
    if mirrored_atlas:
        slot = np.full(s * s, -1, np.int64)
        slot[texels.pixel] = np.arange(n)
        row, col = texels.pixel // s, texels.pixel % s
        twin = slot[row * s + (s - 1 - col)]
        has = twin >= 0
        has[has] = seen[twin[has]]
        return np.where(has, twin, 0), has
    from scipy.spatial import cKDTree

    if not seen.any():
        return np.zeros(n, np.int64), np.zeros(n, bool)
    footprint = float(np.ptp(c, axis=0).max()) / s  # about a texel's size in canonical metres
    d, i = cKDTree(c[seen]).query(c * np.array([-1.0, 1.0, 1.0]), k=1, distance_upper_bound=4 * footprint)
    has = np.isfinite(d)
    idx = np.nonzero(seen)[0]
    return np.where(has, idx[np.minimum(i, len(idx) - 1)], 0), has


def _idw(tree, values: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(values))
    d, i = tree.query(queries, k=k)
    if k == 1:
        d, i = d[:, None], i[:, None]
    wgt = 1.0 / np.maximum(d, 1e-9)
    return np.einsum("nk,nkc->nc", wgt, values[i]) / wgt.sum(1, keepdims=True)


def _gutter(image: np.ndarray, filled: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    if filled.all() or not filled.any():
        return image
    _, (ri, ci) = distance_transform_edt(~filled, return_indices=True)
    return image[ri, ci]


def flat(faces: np.ndarray, uv: np.ndarray, face_colours: np.ndarray, size: int = SIZE,
         texels: TexelMap | None = None, note: str = "") -> Texture:
    """The template look in the atlas: each face's flat linear colour (F, 3), gutter filled."""
    texels = texels or texel_map(uv, faces, size)
    s = texels.size
    lin = np.zeros((s * s, 3))
    lin[texels.pixel] = np.asarray(face_colours, dtype=np.float64)[texels.face]
    filled = np.zeros(s * s, bool)
    filled[texels.pixel] = True
    img = _gutter(linear_to_srgb8(lin).reshape(s, s, 3), filled.reshape(s, s))
    source = np.full(s * s, GUTTER, np.uint8)
    source[texels.pixel] = FLAT
    return Texture(img, source.reshape(s, s), {"flat": 1.0, "note": note})


def bake(vertices_cam: np.ndarray, faces: np.ndarray, uv: np.ndarray, canonical: np.ndarray,
         photo_rgb: np.ndarray, intrinsics: np.ndarray, photo_mask: np.ndarray | None = None,
         size: int = SIZE, texels: TexelMap | None = None, fallback_colours: np.ndarray | None = None,
         mirrored_atlas: bool = False, delight: bool | str = False) -> Texture:
    """Bake the photo into the atlas (module docstring).

    vertices_cam (V, 3) the posed mesh in the photo's camera space (OpenCV, metres); faces
    (F, 3); uv (V, 2); canonical (V, 3) each vertex's Q; photo_rgb (H, W, 3) uint8 sRGB;
    intrinsics (3, 3) in the photo's pixels; photo_mask (H, W) bool, the animal (None: the mesh's
    own silhouette stands in, eroded by two pixels). When the photo colours fewer than
    MIN_PHOTO_TEXELS texels, `fallback_colours` (F, 3) linear (the template's) are baked flat and
    the figures' note says why; without them that is a one-line DualPMError. `mirrored_atlas`:
    the UVs of mirror twins are (1 - u, v) of each other (CharacterMesh's layout), so a texel's
    twin is the texel mirrored across the atlas's middle column, with no search. `delight`: take
    the photo's light out of its colours, for an albedo texture that Blender lights again:
    "off" (or False), "on" (or True: divide by the sky, sun and cast shadows fitted in
    character/light.py, then by what is left of a first-order dependence on the normal),
    "auto" (the same where a first-order fit of texel pairs finds the light varying,
    first_spread >= AUTO_SPREAD, else nothing), "first-order" (the earlier fit of the log
    luminance by the normal alone, `_shading`, kept to compare). The figures' "light" says what
    was fitted and whether it was applied. docs/character.md measures them."""
    from scipy.spatial import cKDTree

    t0 = time.perf_counter()
    mode = _delight_mode(delight)
    v = np.asarray(vertices_cam, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    photo = np.asarray(photo_rgb)
    if photo.ndim == 2:  # greyscale: the same value in every channel
        photo = np.repeat(photo[..., None], 3, axis=2)
    if photo.ndim != 3 or photo.shape[2] not in (3, 4) or photo.dtype != np.uint8:
        raise DualPMError(f"texture: photo has shape {photo.shape} {photo.dtype}, expected (H, W, 3) uint8")
    photo = photo[..., :3]
    h, w = photo.shape[:2]
    k = np.asarray(intrinsics, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or np.asarray(canonical).shape != v.shape:
        raise DualPMError(f"texture: vertices {v.shape} and canonical {np.asarray(canonical).shape} "
                          "must both be (V, 3)")
    if photo_mask is not None and np.asarray(photo_mask).shape != (h, w):
        raise DualPMError(f"texture: mask is {np.asarray(photo_mask).shape[::-1]} but the photo {w}x{h}")
    texels = texels or texel_map(uv, faces, size)
    s = texels.size
    t_map = time.perf_counter()

    p = texels.points(v, faces)
    c = texels.points(canonical, faces)
    n = texels.points(_vertex_normals(v, faces), faces)
    ray = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    cos = np.abs(np.sum(n * ray, axis=1)) / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
    weight = np.clip((cos - MIN_COS) / (1 - MIN_COS), 0, 1)

    uvp = camera.project(p, k)
    col, row = np.floor(uvp[:, 0]).astype(np.int64), np.floor(uvp[:, 1]).astype(np.int64)
    in_photo = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (p[:, 2] > raster.NEAR)
    # The mask is read only over the texels' box, with a margin wider than the erosion (so the
    # box's own border erodes nothing a texel reads): a 12-megapixel photo costs little more.
    on_animal = np.zeros(len(p), bool)
    if in_photo.any():
        y0, y1 = max(int(row[in_photo].min()) - 3, 0), min(int(row[in_photo].max()) + 4, h)
        x0, x1 = max(int(col[in_photo].min()) - 3, 0), min(int(col[in_photo].max()) + 4, w)
        if photo_mask is None:
            from .. import silhouette

            kb = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ k
            mask = _erode(_erode(silhouette.rasterize(v, faces, kb, (y1 - y0, x1 - x0))))
        else:
            mask = _erode(np.asarray(photo_mask, dtype=bool)[y0:y1, x0:x1])
        on_animal[in_photo] = mask[row[in_photo] - y0, col[in_photo] - x0]
    seen = on_animal & (weight > 0)
    seen[seen] = _visible(p[seen], v, faces, k, (h, w))
    t_vis = time.perf_counter()

    lin = np.zeros((len(p), 3))
    source = np.full(len(p), NONE, np.uint8)
    note = ""
    if seen.sum() < MIN_PHOTO_TEXELS:
        mask_pixels = "no" if photo_mask is None else int(np.count_nonzero(photo_mask))
        reason = (f"the photo shows only {int(seen.sum())} texels of the character on the animal's mask "
                  f"({mask_pixels} mask pixels)")
        if fallback_colours is None:
            raise DualPMError(f"texture: {reason}; nothing to bake")
        tex = flat(faces, uv, fallback_colours, texels=texels, note=f"{reason}: the template's colours were used")
        tex.figures.update(seconds=round(time.perf_counter() - t0, 4), photo=0.0)
        return tex
    own = np.zeros((len(p), 3))
    own[seen] = _bilinear(photo, uvp[seen])
    w_own = np.where(seen, weight, 0.0)
    light_figures = _delight(own, seen, n, ray, w_own, p, texels.pixel, s, v, faces, mode)

    # Mirror twins: the seen texels' colours at the reflected canonical points.
    twin_of, has_twin = _twins(texels, c, seen, mirrored_atlas)
    w_twin = np.zeros(len(p))
    twin = np.zeros((len(p), 3))
    w_twin[has_twin] = TWIN_TRUST * w_own[twin_of[has_twin]]
    twin[has_twin] = own[twin_of[has_twin]]
    total = w_own + w_twin
    got = total > 0
    lin[got] = (own[got] * w_own[got, None] + twin[got] * w_twin[got, None]) / total[got, None]
    source[got] = np.where(w_own[got] >= w_twin[got], PHOTO, MIRROR)
    t_mirror = time.perf_counter()

    rest = ~got
    if rest.any():
        # A thinned set of the coloured texels is plenty for a smooth fill and keeps the tree small.
        src = np.nonzero(got)[0][:: max(1, int(got.sum()) // FILL_SOURCES)]
        lin[rest] = _idw(cKDTree(c[src]), lin[src], c[rest], FILL_NEIGHBOURS)
        source[rest] = FILL
    t_fill = time.perf_counter()

    img = np.zeros((s * s, 3), np.uint8)
    img[texels.pixel] = linear_to_srgb8(lin)
    filled = np.zeros(s * s, bool)
    filled[texels.pixel] = True
    img = _gutter(img.reshape(s, s, 3), filled.reshape(s, s))
    src = np.full(s * s, GUTTER, np.uint8)
    src[texels.pixel] = source
    t_end = time.perf_counter()
    figures = {"photo": round(float(np.mean(source == PHOTO)), 4), "mirror": round(float(np.mean(source == MIRROR)), 4),
               "fill": round(float(np.mean(source == FILL)), 4), "texels": int(len(p)), "size": s,
               "seconds": round(t_end - t0, 4),
               "timings_s": {"texel_map": round(t_map - t0, 4), "visibility": round(t_vis - t_map, 4),
                             "mirror": round(t_mirror - t_vis, 4), "fill": round(t_fill - t_mirror, 4),
                             "gutter": round(t_end - t_fill, 4)}, "note": note}
    if light_figures:
        figures["light"] = light_figures
        figures["timings_s"]["light"] = light_figures.pop("seconds")
    return Texture(img, src.reshape(s, s), figures)
