"""Fitting the template rig: to an amodal point cloud (fit), and to a photo (fit_to_photo).

Input: N observed points, P (N, 3) in camera space (OpenCV axes, metres) and their canonical
points Q (N, 3) (canonical.py: the horse template's rest pose, metres). Q says which part of the
animal a point is (and so which bones move it), P says where that part is now; for a photo, the
pixel where each visible point was seen and the animal's mask say it better (photo.py).

One module per concept (docs/fitting.md has the derivation and the measured figures):

  support.py     input checks, Q matched to the template, support per bone, the solver's subset
  prior.py       the learnt pose prior (assets/pose_prior.npz)
  align.py       Kabsch, grouped Kabsch, robust similarity
  rig.py         the rig's structure (mirroring, scale groups, body parts), FitContext, prepare()
  init.py        the start: similarity on the trunk, per-bone Kabsch down the chain
  chain.py       the parameter vector, forward kinematics, points bound to the chain + Jacobian
  terms/         objective terms: 3D points, reprojection of Q, silhouette, priors
  solver.py      Levenberg-Marquardt (and scipy's least_squares) over a list of terms
  hypotheses.py  starting poses and facings for the photo fit
  fit.py         the 3D fit
  photo.py       the photo fit
  result.py      SkeletonFit and bone flags
  baseline.py    the reference code's per-bone Kabsch

Frames and parameterisation of the result (SkeletonFit):

* Model space is the template's rest frame, scaled: the instance's rest skeleton has the
  template's bone axes (rest_frames) and scaled head positions; Z up, the animal faces -Y.
* model_to_camera M (4, 4) is rigid (no scale): camera = M @ model. The root bone (Body) and its
  only child (Back) keep identity local rotations: M alone places the animal (it is the root's
  rotation and translation), and root_translation is zero.
* rotations (J, 4) are local quaternions (w, x, y, z) in the skeleton.py convention, so
  `rest_skeleton.forward_kinematics(rotations)` gives the posed model-space frames G and M @ G
  the camera-space ones.
* Scales: global_scale s scales the whole template (lengths and thickness); bone_scales s_k (J,)
  then stretch bone k along its own Y axis (head to tail): a child's head offset in its parent's
  frame is s * diag(1, s_parent, 1) * the template offset, and a rest point bound to bone k is
  s * diag(t_k, s_k, t_k) * its template bone-local coordinates, t_k its body part's thickness
  (photo fits; 1 otherwise).
"""

from .baseline import KabschBaseline, fit_kabsch_baseline
from .blas import single_threaded_blas
from .fit import OUTLIER_FRACTION, PREDICTED_POSE_WEIGHT, FitOptions, fit
from .photo import PhotoOptions, fit_to_photo
from .prior import PosePrior, build_default_prior, build_pose_prior, load_pose_prior, save_pose_prior
from .result import FLAG_HIGH_RESIDUAL, FLAG_NAMES, FLAG_NO_SUPPORT, FLAG_WEAK_SUPPORT, SkeletonFit, flag_names
from .rig import (CORE_BONES, FIXED_BONES, PARTS, FitContext, instance_rest_points, mirror_name, mirror_rotation,
                  prepare, scaled_rest_skeleton)

__all__ = ["fit", "fit_to_photo", "prepare", "FitOptions", "PhotoOptions", "SkeletonFit", "FitContext",
           "PREDICTED_POSE_WEIGHT", "OUTLIER_FRACTION", "KabschBaseline", "fit_kabsch_baseline", "PosePrior",
           "build_pose_prior", "build_default_prior", "load_pose_prior", "save_pose_prior", "single_threaded_blas",
           "flag_names", "FLAG_NAMES", "FLAG_NO_SUPPORT", "FLAG_WEAK_SUPPORT", "FLAG_HIGH_RESIDUAL", "CORE_BONES",
           "FIXED_BONES", "PARTS", "instance_rest_points", "mirror_name", "mirror_rotation", "scaled_rest_skeleton"]
