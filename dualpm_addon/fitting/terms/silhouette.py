"""The outline: the posed surface, projected through the solved camera, should stay inside the
animal's mask and fill it (distance transforms both ways, as in silhouette fitting of SMAL-style
models). Samples are mesh vertices bound to the chain; the mask is the segmenter's or the user's.

SilhouetteInside: each vertex sample pays its distance (pixels) to the mask; zero inside, and
zero past the grid's border where the mask runs into it (the animal goes on out of view).
SilhouetteFill: each mask sample pays the distance to the nearest projected vertex sample (the
correspondence is re-found at every evaluation and held fixed for the Jacobian, as in ICP).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..chain import BoundPoints
from .projection import chain_rule, project


def outside_distance(mask: np.ndarray, pad: int = 0) -> np.ndarray:
    """(H + 2 pad, W + 2 pad) float: each pixel's distance in pixels to the nearest mask pixel (0
    on the mask), on the grid grown by `pad` pixels each side. Where the mask reaches the grid's
    border the animal goes on past it (cut by the frame or by the crop), so the padding continues
    the border's mask pixels straight outwards: a leg or a head out of view costs nothing there,
    where an unpadded field would pull it back into the frame."""
    m = np.asarray(mask, dtype=bool)
    if pad > 0:
        m = np.pad(m, int(pad), mode="edge")
    return ndimage.distance_transform_edt(~m).astype(np.float64)


def sample_field(field: np.ndarray, uv: np.ndarray):
    """Bilinear field values at pixel positions uv (N, 2) (x, y; pixel centres at +0.5) and their
    gradient (N, 2). Outside the grid the value grows with the distance past the border, so a
    point far outside is pulled back in."""
    h, w = field.shape
    p = uv - 0.5
    lo, hi = np.zeros(2), np.array([w - 1, h - 1], dtype=np.float64)
    c = np.clip(p, lo, hi)
    over = p - c
    x0 = np.minimum(np.floor(c[:, 0]).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(c[:, 1]).astype(np.int64), h - 2)
    fx, fy = c[:, 0] - x0, c[:, 1] - y0
    f00, f10 = field[y0, x0], field[y0, x0 + 1]
    f01, f11 = field[y0 + 1, x0], field[y0 + 1, x0 + 1]
    val = (f00 * (1 - fx) + f10 * fx) * (1 - fy) + (f01 * (1 - fx) + f11 * fx) * fy
    gx = ((f10 - f00) * (1 - fy) + (f11 - f01) * fy) * (over[:, 0] == 0)
    gy = ((f01 - f00) * (1 - fx) + (f11 - f10) * fx) * (over[:, 1] == 0)
    dist = np.linalg.norm(over, axis=1)
    g = np.stack([gx, gy], axis=1) + np.where(dist[:, None] > 0, over / np.maximum(dist, 1e-12)[:, None], 0.0)
    return val + dist, g


def mask_samples(mask: np.ndarray, boundary: int = 240, interior: int = 160) -> np.ndarray:
    """(M, 2) pixel centres (x, y) of the mask: up to `boundary` evenly spaced outline pixels
    (the outline is what the fill term must reach) and up to `interior` inside ones."""
    mask = np.asarray(mask, dtype=bool)
    edge = mask & ~ndimage.binary_erosion(mask)
    inner = mask & ~edge
    out = []
    for sel, n in ((edge, boundary), (inner, interior)):
        rows, cols = np.nonzero(sel)
        if len(rows) == 0:
            continue
        pick = np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(np.int64)
        out.append(np.stack([cols[pick], rows[pick]], axis=1) + 0.5)
    return np.concatenate(out) if out else np.zeros((0, 2))


class SilhouetteInside:
    """Rows (1 per vertex sample): outside_distance(project(camera(v))) / size * sqrt(weight)."""

    def __init__(self, bound: BoundPoints, mask: np.ndarray, k: np.ndarray, weight: float = 1.0,
                 loss: str = "soft_l1", f_scale: float = 0.02):
        self.bound, self.k = bound, np.asarray(k, dtype=np.float64)
        self.pad = max(np.asarray(mask).shape) // 2  # past it, the field goes on linearly
        self.field = outside_distance(mask, self.pad)
        self.row = np.sqrt(weight / len(bound.local)) / float(max(mask.shape))
        self.loss, self.f_scale = loss, f_scale

    def _eval(self, x):
        uv, d, dlf = project(self.bound.camera(x), self.k, self.bound.model.log_focal(x))
        val, g = sample_field(self.field, uv + self.pad)
        return val, g, d, dlf

    def residuals(self, x) -> np.ndarray:
        return self._eval(x)[0] * self.row

    def jacobian(self, x) -> np.ndarray:
        _, g, d, dlf = self._eval(x)
        j = chain_rule(d, dlf, self.bound.jacobian(x), self.bound.model)
        return np.einsum("na,nap->np", g, j) * self.row


class SilhouetteFill:
    """Rows (2 per mask sample): (project(camera(v_nn)) - m) / size * sqrt(weight), v_nn the
    vertex sample nearest to the mask sample m in the image."""

    def __init__(self, bound: BoundPoints, mask: np.ndarray, k: np.ndarray, weight: float = 1.0,
                 loss: str = "soft_l1", f_scale: float = 0.02, samples: np.ndarray | None = None):
        self.bound, self.k = bound, np.asarray(k, dtype=np.float64)
        self.samples = mask_samples(mask) if samples is None else np.asarray(samples, dtype=np.float64)
        self.row = np.sqrt(weight / max(len(self.samples), 1)) / float(max(mask.shape))
        self.loss, self.f_scale = loss, f_scale
        self._key = None

    def _eval(self, x):
        key = (self.bound.model.version, x.tobytes())
        if self._key != key:
            uv, d, dlf = project(self.bound.camera(x), self.k, self.bound.model.log_focal(x))
            nn = cKDTree(uv).query(self.samples)[1]
            self._key, self._cache = key, (uv, d, dlf, nn)
        return self._cache

    def residuals(self, x) -> np.ndarray:
        uv, _, _, nn = self._eval(x)
        return ((uv[nn] - self.samples) * self.row).ravel()

    def jacobian(self, x) -> np.ndarray:
        _, d, dlf, nn = self._eval(x)
        jc = self.bound.jacobian(x)
        j = chain_rule(d[nn], dlf[nn], jc[nn], self.bound.model) * self.row
        return j.reshape(-1, j.shape[2])
