"""Animate from video: one rig fitted to a whole clip, its pose per frame (issue 16).

    from dualpm_addon.video import ClipOptions, fit_clip
    clip = fit_clip([preprocess.predict_photo(...) or None for each frame])

Modules: frame (a frame's evidence), params (the clip's parameter layout), shape (one shape over
keyframes), track (frame-to-frame tracking, lost frames, bridging), redetect (a track that lost
the animal's facing turned back onto it), window (the temporal solve in overlapping windows),
stacked (LM over several frames), fit (ClipOptions, ClipFit, fit_clip), fit_process (the fit
in a forked process fed while inference runs), forked (one piece of work in a forked copy: the
windows' second half, the preview's), infer, decode, motion, preview, animate.
docs/video.md has the method and the measured figures.
"""

from .fit import ClipFit, ClipOptions, fit_clip

__all__ = ["ClipFit", "ClipOptions", "fit_clip"]
