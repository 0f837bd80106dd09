"""The outline, filled where it is not yet covered: mask pixels that the posed surface, projected
and rasterized, does not cover pay their distance to the nearest projected vertex sample.

SilhouetteFill (silhouette.py) charges every mask sample its distance to the nearest vertex
sample, covered or not. Inside the rig's outline that pull has no meaning (the surface between
samples covers the pixel already), and it is most of the term: interior samples hold vertices
where they are, and a boundary sample whose nearest sample is an interior vertex drags that
vertex, not the outline, toward it. Here only uncovered mask pixels pull, so the legs, the head
and the tail are drawn into the parts of the mask they miss, and a covered mask costs nothing.
The coverage is the mesh itself rasterized (silhouette.rasterize) at every evaluation and held
fixed for the Jacobian, as the nearest-sample correspondences are.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ... import silhouette as raster
from ..chain import BoundPoints
from .projection import chain_rule, focal_scaled, project
from .silhouette import mask_samples


class SilhouetteCover:
    """Rows (2 per mask sample): for a sample m that the rasterized posed mesh does not cover,
    (project(camera(v_nn)) - m) / size * sqrt(weight), v_nn the vertex sample nearest to m in the
    image; zero for a covered sample.

    samples: the vertex samples that pull (BoundPoints); mesh: the whole mesh's vertices bound to
    the chain (BoundPoints) and its faces, for the coverage."""

    def __init__(self, samples: BoundPoints, mesh: BoundPoints, faces: np.ndarray, mask: np.ndarray,
                 k: np.ndarray, weight: float = 1.0, loss: str = "soft_l1", f_scale: float = 0.02,
                 boundary: int = 240, interior: int = 400):
        self.bound, self.mesh, self.faces = samples, mesh, np.asarray(faces, dtype=np.int64)
        self.k = np.asarray(k, dtype=np.float64)
        self.shape = np.asarray(mask).shape
        self.samples = mask_samples(mask, boundary, interior)
        self._pix = np.floor(self.samples).astype(np.int64)  # (x, y) of each sample's pixel
        self.row = np.sqrt(weight / max(len(self.samples), 1)) / float(max(self.shape))
        self.loss, self.f_scale = loss, f_scale
        self._key = None

    def _eval(self, x):
        key = (self.bound.model.version, x.tobytes())
        if self._key != key:
            lf = self.bound.model.log_focal(x)
            uv, d, dlf = project(self.bound.camera(x), self.k, lf)
            covered = raster.rasterize(self.mesh.camera(x), self.faces, focal_scaled(self.k, lf), self.shape)
            free = ~covered[self._pix[:, 1], self._pix[:, 0]]
            nn = cKDTree(uv).query(self.samples[free])[1] if free.any() else np.zeros(0, np.int64)
            self._key, self._cache = key, (uv, d, dlf, free, nn)
        return self._cache

    def residuals(self, x) -> np.ndarray:
        uv, _, _, free, nn = self._eval(x)
        r = np.zeros((len(self.samples), 2))
        r[free] = (uv[nn] - self.samples[free]) * self.row
        return r.ravel()

    def jacobian(self, x) -> np.ndarray:
        _, d, dlf, free, nn = self._eval(x)
        jc = self.bound.jacobian(x)
        j = np.zeros((len(self.samples), 2, jc.shape[2]))
        if len(nn):
            j[free] = chain_rule(d[nn], dlf[nn], jc[nn], self.bound.model) * self.row
        return j.reshape(-1, j.shape[2])
