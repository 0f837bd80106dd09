"""How much the photo fit trusts the predicted 3D points P: inverse-variance weighting, with the
variance read off the evidence itself.

The 3D term's default weight (PhotoOptions.points3d_weight) is set for the shipped predictor,
whose P lies a twentieth to a tenth of a body length from any rig (median over its points):
there the photo's outline and the reprojected Q must lead. A better predictor's P (exact maps,
in the limit) agrees with a rig to a centimetre or two, and then the outline (a horse
template's outline on another species, at 160 pixels) should not outvote it. The 3D fit that starts the photo fit says which case a map
is: the median distance of its points from their posed Q. Weight grows as that spread's inverse
square below a reference spread, and is capped; no map gets less trust than the default.
"""

from __future__ import annotations

import numpy as np


def point_spread(term, x) -> float:
    """The median distance, in body lengths, of a Points3D term's points from their posed Q at x."""
    d = np.linalg.norm(term.bound.camera(x) - term.p, axis=1) * term.row_scale
    return float(np.median(d)) if len(d) else float("inf")


def points3d_weight(spread: float, base: float, reference: float, cap: float) -> float:
    """base while spread >= reference (body lengths); base * (reference / spread)^2 below it, at
    most cap. reference <= 0: base."""
    if reference <= 0 or not np.isfinite(spread):
        return float(base)
    return float(np.clip(base * (reference / max(spread, 1e-6)) ** 2, base, max(cap, base)))
