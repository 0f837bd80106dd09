"""Objective terms of the fit, one module each. A term has `residuals(x) -> (m,)`, `jacobian(x)
-> (m, n_params)` (analytic, tested against finite differences), `loss` (a robust loss name, or
None for plain squares) and `f_scale` (the robust loss' scale, in the term's residual units).

points3d      observed camera-space points P (the predictor's 3D output)
reprojection  each visible pixel's Q, posed and projected, lands on that pixel
silhouette    the posed surface, projected, stays inside the mask and fills it
priors        pose, bone-length scales, focal length, thickness
"""

from .coverage import SilhouetteCover
from .points3d import Points3D
from .priors import FocalPrior, PosePriorTerm, ScalePrior, ThicknessPrior
from .reprojection import Reprojection
from .silhouette import SilhouetteFill, SilhouetteInside

__all__ = ["Points3D", "Reprojection", "SilhouetteInside", "SilhouetteFill", "SilhouetteCover", "PosePriorTerm", "ScalePrior",
           "FocalPrior", "ThicknessPrior"]
