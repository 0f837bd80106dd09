"""The pose prior: a Gaussian per joint on its local rotation, learnt from every clip of every
species, shipped in assets/pose_prior.npz (rebuild: python -m dualpm_addon.fitting.prior
.cache/templates)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import DualPMError
from ..npz import write_npz
from ..rotations import matrix_to_quat, quat_to_axis_angle, quat_to_matrix
from ..skeleton import Skeleton

PRIOR_FILE = "pose_prior.npz"


@dataclass(frozen=True)
class PosePrior:
    """A Gaussian per joint on its local rotation as an axis-angle vector (radians), in the
    reference template's bone frames.

    joint_names (J,); mean (J, 3); whiten (J, 3, 3) with |whiten_j (r - mean_j)|^2 the
    Mahalanobis distance; std (J, 3) marginal standard deviations (floor included);
    sample_std (J, 3) those of the clip samples alone (0 where a joint never moves).
    """

    joint_names: tuple[str, ...]
    mean: np.ndarray
    whiten: np.ndarray
    std: np.ndarray
    sample_std: np.ndarray

    def for_skeleton(self, skeleton: Skeleton) -> "PosePrior":
        """Rows in the skeleton's joint order; joints the prior lacks get mean 0, std 0.3 rad."""
        j = skeleton.num_joints
        mean, whiten = np.zeros((j, 3)), np.tile(np.eye(3) / 0.3, (j, 1, 1))
        std, sample = np.full((j, 3), 0.3), np.full((j, 3), 0.3)
        for i, name in enumerate(skeleton.joint_names):
            if name in self.joint_names:
                k = self.joint_names.index(name)
                mean[i], whiten[i], std[i], sample[i] = self.mean[k], self.whiten[k], self.std[k], self.sample_std[k]
        return PosePrior(tuple(skeleton.joint_names), mean, whiten, std, sample)

    def to_arrays(self) -> dict:
        return {"joint_names": np.array(self.joint_names, dtype=np.str_), "mean": self.mean.astype(np.float32),
                "whiten": self.whiten.astype(np.float32), "std": self.std.astype(np.float32),
                "sample_std": self.sample_std.astype(np.float32)}


def build_pose_prior(templates, reference, min_std: float = 0.1) -> PosePrior:
    """Pose prior from every clip frame of every template, carried into the reference's frames.

    A species' local rotation R_s of joint j becomes D R_s D^T in the reference, D the rotation
    between the two rest frames, so the same bend in the world gives the same sample. The
    covariance gets min_std^2 (radians) on its diagonal: joints that never move in the clips
    (hooves, shoulders) may still bend a little in a photo.
    """
    ref = reference.skeleton
    samples = {n: [] for n in ref.joint_names}
    for t in templates:
        sk = t.skeleton
        if len(t.clip_rotations) == 0:
            continue
        for j, name in enumerate(sk.joint_names):
            if name not in samples:
                continue
            d = ref.rest_frames[ref.index(name)].T @ sk.rest_frames[j]
            r = d @ quat_to_matrix(np.asarray(t.clip_rotations[:, j], dtype=np.float64)) @ d.T
            samples[name].append(quat_to_axis_angle(matrix_to_quat(r)))
    nj = ref.num_joints
    mean, whiten = np.zeros((nj, 3)), np.zeros((nj, 3, 3))
    std, sample_std = np.zeros((nj, 3)), np.zeros((nj, 3))
    for j, name in enumerate(ref.joint_names):
        a = np.concatenate(samples[name]) if samples[name] else np.zeros((1, 3))
        mean[j] = a.mean(axis=0)
        cov = np.cov(a.T) if len(a) > 1 else np.zeros((3, 3))
        sample_std[j] = np.sqrt(np.diag(cov))
        cov = cov + np.eye(3) * min_std**2
        std[j] = np.sqrt(np.diag(cov))
        whiten[j] = np.linalg.cholesky(np.linalg.inv(cov)).T  # W^T W = cov^-1
    return PosePrior(tuple(ref.joint_names), mean, whiten, std, sample_std)


def default_prior_path() -> str:
    from ..template import assets_dir

    return os.path.join(assets_dir(), PRIOR_FILE)


def load_pose_prior(path: str | None = None) -> PosePrior:
    path = default_prior_path() if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such pose prior file")
    try:
        with np.load(path, allow_pickle=False) as a:
            return PosePrior(tuple(str(n) for n in a["joint_names"]), a["mean"].astype(np.float64),
                             a["whiten"].astype(np.float64), a["std"].astype(np.float64),
                             a["sample_std"].astype(np.float64))
    except (KeyError, ValueError, OSError) as e:
        raise DualPMError(f"{path}: not a pose prior ({e})") from None


def save_pose_prior(prior: PosePrior, path: str) -> None:
    write_npz(path, prior.to_arrays())


def build_default_prior(templates_dir: str, out: str | None = None) -> PosePrior:
    """Rebuild assets/pose_prior.npz from every baked template in `templates_dir`."""
    import glob

    from .. import template as template_mod

    paths = sorted(glob.glob(os.path.join(templates_dir, "*.npz")))
    if not paths:
        raise DualPMError(f"{templates_dir}: no baked templates (*.npz)")
    prior = build_pose_prior([template_mod.load(p) for p in paths], template_mod.load_default())
    save_pose_prior(prior, out or default_prior_path())
    return prior


if __name__ == "__main__":
    import sys

    build_default_prior(sys.argv[1] if len(sys.argv) > 1 else ".cache/templates")
