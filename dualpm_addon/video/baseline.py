"""The peer the clip fit is measured against: every frame fitted on its own, as `dualpm
reconstruct` fits a photo (the same evidence as the clip fit's frame.observe, then
fitting.fit_to_photo with every hypothesis), with nothing shared between frames."""

from __future__ import annotations

import numpy as np

from ..fitting import fit_to_photo
from ..fitting.blas import single_threaded_blas


def independent_fits(frames: list, template=None, options=None) -> dict:
    """{"joints": (T, J, 3) camera space (NaN where no fit), "model_to_camera": (T, 4, 4),
    "joint_names", "parents", "seconds": (T,)} for frames of predict_photo dicts (or None)."""
    import time

    from ..pipeline import fit_context
    from .fit import ClipOptions, _photo_options
    from .frame import observe

    options = options or ClipOptions()
    if template is None:
        from ..template import load_default

        template = load_default()
    ctx = fit_context(template)
    sk = ctx.skeleton
    n = len(frames)
    joints = np.full((n, sk.num_joints, 3), np.nan)
    m2c = np.tile(np.eye(4), (n, 1, 1))
    secs = np.zeros(n)
    with single_threaded_blas():
        for t, pm in enumerate(frames):
            tic = time.perf_counter()
            fr = None if pm is None else observe(pm, t, ctx, _photo_options(options, pm), options.place_camera,
                                                 options.seed + t, max_points=None)
            if fr is not None:
                fit = fit_to_photo(fr.points, fr.k_crop, fr.mask, ctx, _photo_options(options, pm),
                                   focal_known=fr.focal_known)
                joints[t], m2c[t] = fit.joints, fit.model_to_camera
            secs[t] = time.perf_counter() - tic
    return {"joints": joints, "model_to_camera": m2c, "joint_names": list(sk.joint_names),
            "parents": np.asarray(sk.parents), "seconds": secs}
