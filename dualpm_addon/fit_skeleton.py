"""Fit the template skeleton to an amodal point cloud: a posed, per-bone scaled, skinned rig.

Input: N observed points, P (N, 3) in camera space (OpenCV axes, metres) and their canonical
points Q (N, 3) (canonical.py: the horse template's rest pose, metres). Q says which part of the
animal a point is (and so which bones move it), P says where that part is now.

Steps (docs/fitting.md has the derivation and the measured figures):

1. Correspondence (correspondence.py): Q of a random subset (`max_matched`) to the reference
   template's surface; far matches are rejected, kept points get the template's skin weights.
   Support per bone (matched points it dominates, and below it) decides what can be fitted.
2. Subsampling: at most `max_points` points for the solver, at most `per_bone` per dominant bone,
   so that small bones (ears, hooves) keep a voice next to the big torso.
3. Initialisation: a robust similarity (RANSAC, then reweighted Umeyama) on the trunk's points
   gives the model->camera transform and the global scale; robust weighted Kabsch per bone gives
   each bone's rotation, turned into local rotations down the chain (ill-posed bones start at
   the prior mean), and its residuals flag gross outliers, which the solver never sees.
4. Refinement: robust non-linear least squares over the model->camera rotation (axis-angle) and
   translation, the global log-scale, each free joint's local rotation (axis-angle) and per-bone
   log length scales, with an analytic sparse Jacobian (`_ChainProblem`). Model: every point is
   its Q carried by linear blend skinning of the scaled, posed template skeleton; data: its
   observed P. Priors: a Gaussian on each joint's axis-angle learnt from all clips of all
   species (`PosePrior`, shipped in assets/pose_prior.npz), a Gaussian on log scales (scales
   near 1); left and right bones share one scale parameter, so paired limbs are exactly equally
   long (the symmetric prior at infinite weight). Bones without support are not fitted: they
   copy their supported left/right partner, mirrored (or keep the prior mean), and are flagged.
   The default solver is a Levenberg-Marquardt on the normal equations (10-15x faster here);
   `FitOptions(solver="scipy")` runs scipy.optimize.least_squares (trf, LSMR, the same robust
   loss, residuals and sparse Jacobian) on the same objective.

Frames and parameterisation of the result (`SkeletonFit`):

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
  s * diag(1, s_k, 1) * its template bone-local coordinates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares

from . import correspondence as corr
from .errors import DualPMError
from .npz import write_npz
from .rotations import matrix_from_axis_angle, matrix_to_quat, quat_to_axis_angle, quat_to_matrix
from .skeleton import Skeleton, rigid_inverse
from .skinning import dominant_joints, linear_blend_skinning

PRIOR_FILE = "pose_prior.npz"

# Bone flags (bit mask per bone in SkeletonFit.flags).
FLAG_NO_SUPPORT = 1  # no matched points on the bone or below it: prior-mean or mirrored pose
FLAG_WEAK_SUPPORT = 2  # fewer than min_support points on the bone itself: leans on the prior
FLAG_HIGH_RESIDUAL = 4  # its points sit far from the fitted surface (median > 3 % body length)
FLAG_NAMES = {FLAG_NO_SUPPORT: "no_support", FLAG_WEAK_SUPPORT: "weak_support",
              FLAG_HIGH_RESIDUAL: "high_residual"}

CORE_BONES = ("Back", "Torso", "Torso2", "Torso3")  # the rigid-ish trunk that places the animal
FIXED_BONES = ("Body", "Back")  # root and its only child: their rotation is the model->camera map
RIGID_STD = 0.02  # radians: joints no clip moves more than this are held at their prior mean
HIGH_RESIDUAL = 0.03  # fraction of body length
ONE_BONE_FRACTION = 0.9  # a cloud with this share of its points on one bone cannot be fitted
OUTLIER_FRACTION = 0.08  # residual under its bone's rigid Kabsch, fraction of body length
# FitOptions' pose_weight is tuned on exact maps. A predictor's maps are far noisier (its Q is
# often a tenth of a body length off), and there the data alone bends limbs into poses no animal
# takes: a ten times stronger prior lowered the whole pipeline's joint error on held-out renders
# from 18.0 % to 16.0 % of body length (docs/fitting.md). Used for predicted maps.
PREDICTED_POSE_WEIGHT = 0.01


class single_threaded_blas:
    """Context manager: OpenBLAS (numpy's and scipy's) on one thread inside, restored after.

    The fit's matrices are small (a few hundred rows): a second BLAS thread buys nothing, and on
    a busy machine its spin-waiting made fits 5-20x slower in our measurements (docs/fitting.md).
    Works on the loaded OpenBLAS libraries found in /proc/self/maps (Linux); elsewhere, or when
    the symbols are missing, it does nothing. The setting is process-wide while it is held.
    """

    _libs = None
    _names = (("openblas_set_num_threads", "openblas_get_num_threads"),
              ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
              ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
              ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"))

    @classmethod
    def _find(cls) -> list:
        if cls._libs is None:
            import ctypes

            found = []
            try:
                with open("/proc/self/maps") as f:
                    paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
            except OSError:
                paths = set()
            for path in sorted(paths):
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                for set_name, get_name in cls._names:
                    if hasattr(lib, set_name) and hasattr(lib, get_name):
                        found.append((getattr(lib, set_name), getattr(lib, get_name)))
                        break
            cls._libs = found
        return cls._libs

    def __enter__(self):
        self._saved = [(set_, get()) for set_, get in self._find()]
        for set_, _ in self._saved:
            set_(1)
        return self

    def __exit__(self, *exc):
        for set_, n in self._saved:
            set_(int(n))
        return False


def flag_names(bits: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if int(bits) & bit]


# ---------------------------------------------------------------------------------------------
# Pose prior
# ---------------------------------------------------------------------------------------------

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
    from .template import assets_dir

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


# ---------------------------------------------------------------------------------------------
# Rigid and similarity alignment
# ---------------------------------------------------------------------------------------------

def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
           with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Weighted least-squares R, t (and scale s when asked) with dst ~ s R src + t.

    src, dst (N, 3); weights (N,) >= 0. Returns R (3, 3), t (3,), s, and the singular values
    (3,) of the weighted cross-covariance (the second one says how well-posed R is).
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    tw = w.sum()
    if tw <= 0:
        return np.eye(3), np.zeros(3), 1.0, np.zeros(3)
    ms, md = w @ src / tw, w @ dst / tw
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a / tw
    u, sv, vt = np.linalg.svd(cov)
    e = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = (u * e) @ vt
    s = 1.0
    if with_scale:
        var = float(w @ np.sum(a * a, axis=1) / tw)
        s = float(np.sum(sv * e) / var) if var > 0 else 1.0
    return r, md - s * r @ ms, s, sv


def group_median(values: np.ndarray, group: np.ndarray, groups: int, default: float = np.nan) -> np.ndarray:
    """(groups,) median of `values` per group id (lower median for even counts; `default` where
    a group is empty), with one sort instead of a loop over groups."""
    order = np.lexsort((values, group))
    gs, vs = group[order], values[order]
    starts = np.searchsorted(gs, np.arange(groups))
    counts = np.searchsorted(gs, np.arange(groups), side="right") - starts
    out = np.full(groups, default, dtype=np.float64)
    has = counts > 0
    out[has] = vs[starts[has] + (counts[has] - 1) // 2]
    return out


def grouped_kabsch(src: np.ndarray, dst: np.ndarray, group: np.ndarray, weight: np.ndarray, groups: int,
                   iterations: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Kabsch for many point sets at once: point i belongs to set group[i] (-1: none)
    with weight[i]. Returns R (G, 3, 3), t (G, 3) with dst ~ R src + t per set, the singular
    values (G, 3) of each cross-covariance and every point's residual (N,) under its set's
    transform (inf for no set). `iterations` > 0 reweights each set's points by Geman-McClure
    weights at 2.5x the set's median residual, so that outliers lose their pull."""
    inset = group >= 0
    g = np.where(inset, group, 0)
    w0 = np.where(inset, weight, 0.0)
    w = w0
    res = np.full(len(src), np.inf)
    # Per-point features whose weighted group sums give the centroids and cross-covariances.
    feats = np.concatenate([np.ones((len(src), 1)), src, dst, (dst[:, :, None] * src[:, None, :]).reshape(-1, 9)], 1)
    cols = np.arange(len(src))
    for it in range(iterations + 1):
        sums = sparse.csr_matrix((w, (g, cols)), shape=(groups, len(src))) @ feats
        tw = np.maximum(sums[:, 0], 1e-12)
        ms, md = sums[:, 1:4] / tw[:, None], sums[:, 4:7] / tw[:, None]
        cov = sums[:, 7:].reshape(-1, 3, 3) / tw[:, None, None] - md[:, :, None] * ms[:, None, :]
        u, sv, vt = np.linalg.svd(cov)
        d = np.sign(np.linalg.det(u @ vt))
        u[:, :, 2] *= np.where(d == 0, 1.0, d)[:, None]
        r = u @ vt
        t = md - np.einsum("gij,gj->gi", r, ms)
        res = np.where(inset, np.linalg.norm(np.einsum("nij,nj->ni", r[g], src) + t[g] - dst, axis=1), np.inf)
        if it == iterations:
            break
        med = group_median(res[inset], g[inset], groups, default=1.0)
        c2 = (2.5 * np.maximum(med, 1e-9)) ** 2
        w = w0 * (c2[g] / (c2[g] + res**2)) ** 2
    return r, t, sv, res


def robust_similarity(src: np.ndarray, dst: np.ndarray, threshold: float, rng=None, hypotheses: int = 32,
                      iterations: int = 2, score_points: int = 128) -> tuple[np.ndarray, np.ndarray, float]:
    """Similarity dst ~ s R src + t that a third of gross outliers does not drag.

    RANSAC first (similarities from random 4-point samples, scored by the truncated squared
    residual, MSAC, with inliers closer than `threshold`, in src units, times the hypothesis'
    scale), then iteratively reweighted Umeyama from the best hypothesis' inliers (Geman-McClure
    weights at 2.5x the median inlier residual). Plain reweighting from a least-squares start
    collapses the scale when outliers spread far in depth; the sampling does not."""
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(src)
    if n >= 8:
        idx = rng.integers(0, n, size=(hypotheses, 4))
        s4, d4 = src[idx], dst[idx]
        ms, md = s4.mean(axis=1), d4.mean(axis=1)
        a, b = s4 - ms[:, None], d4 - md[:, None]
        cov = np.einsum("hni,hnj->hij", b, a)
        u, sv, vt = np.linalg.svd(cov)
        det = np.sign(np.linalg.det(u @ vt))
        e = np.stack([np.ones(hypotheses), np.ones(hypotheses), np.where(det == 0, 1.0, det)], axis=1)
        r = (u * e[:, None, :]) @ vt
        var = np.einsum("hni,hni->h", a, a)
        sc = np.where(var > 0, np.sum(sv * e, axis=1) / np.maximum(var, 1e-30), 0.0)
        t = md - sc[:, None] * np.einsum("hij,hj->hi", r, ms)
        probe = rng.choice(n, min(n, score_points), replace=False)
        d = sc[:, None, None] * np.einsum("hij,nj->hni", r, src[probe]) + t[:, None] - dst[probe]
        tau = np.maximum(sc, 1e-12) * threshold
        score = np.minimum(np.einsum("hni,hni->hn", d, d) / tau[:, None] ** 2, 1.0)
        good = (sc > 0) & (sv[:, 1] > 1e-6 * np.maximum(sv[:, 0], 1e-30))
        best = int(np.argmin(np.where(good[:, None], score, 1.0).sum(axis=1)))
        res = np.linalg.norm(sc[best] * src @ r[best].T + t[best] - dst, axis=1)
        w = (res < tau[best]).astype(np.float64)
        if w.sum() < 4:
            w = np.ones(n)
    else:
        w = np.ones(n)
    r, t, s, _ = kabsch(src, dst, w, with_scale=True)
    for _ in range(iterations):
        res = np.linalg.norm(s * src @ r.T + t - dst, axis=1)
        c = 2.5 * max(float(np.median(res[w > 0.5])) if np.any(w > 0.5) else float(np.median(res)), 1e-9)
        w = (c * c / (c * c + res * res)) ** 2
        r, t, s, _ = kabsch(src, dst, w, with_scale=True)
    return r, t, s


# ---------------------------------------------------------------------------------------------
# Skeleton structure and the instance's rest shape
# ---------------------------------------------------------------------------------------------

def mirror_name(name: str) -> str | None:
    if name.endswith(".L"):
        return name[:-2] + ".R"
    if name.endswith(".R"):
        return name[:-2] + ".L"
    return None


def scale_groups(skeleton: Skeleton) -> np.ndarray:
    """(J,) scale parameter per bone: left and right bones share one; the root has -1."""
    g = np.full(skeleton.num_joints, -1)
    nxt = 0
    for j, name in enumerate(skeleton.joint_names):
        if j == 0 or g[j] >= 0:
            continue
        g[j] = nxt
        m = mirror_name(name)
        if m is not None and m in skeleton.joint_names:
            g[skeleton.index(m)] = nxt
        nxt += 1
    return g


def _right_jacobian(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) right Jacobian of SO(3): exp(r + dr) ~ exp(r) exp(Jr(r) dr)."""
    theta = np.linalg.norm(r, axis=-1)[..., None, None]
    k = np.zeros(r.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -r[..., 2], r[..., 1], -r[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = r[..., 2], -r[..., 1], r[..., 0]
    small = theta < 1e-6
    t = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1 - np.cos(t)) / t**2)
    b = np.where(small, 1.0 / 6.0, (t - np.sin(t)) / t**3)
    return np.eye(3) - a * k + b * (k @ k)


def scaled_rest_skeleton(skeleton: Skeleton, global_scale: float, bone_scales: np.ndarray) -> Skeleton:
    """The instance's rest skeleton: heads through the scaled chain, tails stretched per bone,
    bone axes unchanged."""
    lr = skeleton.local_rest_matrices
    parents = np.asarray(skeleton.parents)
    off = global_scale * lr[:, :3, 3]
    off[1:, 1] *= np.asarray(bone_scales)[parents[1:]]
    off[1:] = np.einsum("jab,jb->ja", skeleton.rest_frames[parents[1:]], off[1:])
    heads = np.zeros((skeleton.num_joints, 3))
    heads[0] = off[0]
    depth = np.zeros(skeleton.num_joints, dtype=np.int64)
    for j in range(1, skeleton.num_joints):  # parents come first
        depth[j] = depth[parents[j]] + 1
    for d in range(1, depth.max() + 1):
        lev = np.nonzero(depth == d)[0]
        heads[lev] = heads[parents[lev]] + off[lev]
    tails = heads + global_scale * bone_scales[:, None] * (skeleton.rest_tails - skeleton.rest_heads)
    return Skeleton(tuple(skeleton.joint_names), np.asarray(skeleton.parents).copy(), heads, tails,
                    np.asarray(skeleton.rest_frames).copy())


def instance_rest_points(skeleton: Skeleton, points: np.ndarray, skin_joints: np.ndarray,
                         skin_weights: np.ndarray, global_scale: float, bone_scales: np.ndarray,
                         instance: Skeleton | None = None) -> np.ndarray:
    """Template rest points (V, 3) carried onto the instance's rest skeleton: bone k maps its
    points by B'_k diag(s, s s_k, s) B_k^-1 (B, B' template and instance rest frames) and the
    skin weights blend the maps, as canonical.py blends its bone maps. `instance` is
    scaled_rest_skeleton(skeleton, global_scale, bone_scales), passed in when at hand."""
    inst = instance if instance is not None else scaled_rest_skeleton(skeleton, global_scale, bone_scales)
    d = np.zeros((skeleton.num_joints, 4, 4))
    d[:, 0, 0] = d[:, 2, 2] = global_scale
    d[:, 1, 1] = global_scale * np.asarray(bone_scales)
    d[:, 3, 3] = 1
    maps = inst.rest_matrices @ d @ rigid_inverse(skeleton.rest_matrices)
    blended = np.einsum("vk,vkij->vij", skin_weights, maps[skin_joints, :3, :])
    return np.einsum("vij,vj->vi", blended[..., :3], points) + blended[..., 3]


@dataclass(frozen=True)
class FitContext:
    """What a fit needs from the template, computed once and reused across fits.

    template; index (correspondence.TemplateIndex); prior (PosePrior in the skeleton's order);
    anc (J, J) bool, anc[k, j]: j is k or an ancestor of k; child (J, J) int, child[k, m]: the
    child of k on the way down to m (-1 if m is not strictly below k); levels: joint ids per
    depth below the root; groups (J,) scale parameter per bone; binv (J, 4, 4) inverse rest
    frames; lr_rot (J, 3, 3), lr_t (J, 3) local rest rotations and offsets; fixed (J,) bool
    joints without rotation parameters (root, Back, joints the clips never move); has_skin (J,).
    """

    template: object
    index: corr.TemplateIndex
    prior: PosePrior
    anc: np.ndarray
    child: np.ndarray
    levels: list
    groups: np.ndarray
    binv: np.ndarray
    lr_rot: np.ndarray
    lr_t: np.ndarray
    fixed: np.ndarray
    has_skin: np.ndarray
    core: np.ndarray

    @property
    def skeleton(self) -> Skeleton:
        return self.template.skeleton


def prepare(template=None, prior: PosePrior | None = None, index: corr.TemplateIndex | None = None) -> FitContext:
    """A FitContext for `template` (default: the shipped horse, Q's reference) and `prior`
    (default: assets/pose_prior.npz). Building the correspondence index dominates (~0.2 s)."""
    if template is None:
        from .template import load_default

        template = load_default()
    sk = template.skeleton
    nj = sk.num_joints
    index = index if index is not None else corr.build_index(template)
    if index.num_joints != nj:
        raise DualPMError(f"fit: the index has {index.num_joints} joints, the template {nj}")
    prior = (prior if prior is not None else load_pose_prior()).for_skeleton(sk)
    anc = np.zeros((nj, nj), dtype=bool)
    child = np.full((nj, nj), -1)
    for k in range(nj):
        chain = sk.chain_to_root(k)
        anc[k, chain] = True
        for a, b in zip(chain[1:], chain[:-1]):
            child[a, k] = b
    depth = anc.sum(axis=1) - 1
    levels = [np.nonzero(depth == d)[0] for d in range(1, depth.max() + 1)]
    lr = sk.local_rest_matrices
    fixed = np.isin(np.array(sk.joint_names), FIXED_BONES) | np.all(prior.sample_std < RIGID_STD, axis=1)
    fixed[0] = True
    dom = dominant_joints(template.skin_joints, template.skin_weights)
    return FitContext(template, index, prior, anc, child, levels, scale_groups(sk),
                      np.linalg.inv(sk.rest_matrices), lr[:, :3, :3].copy(), lr[:, :3, 3].copy(), fixed,
                      np.bincount(dom, minlength=nj) > 0,
                      np.array([sk.index(b) for b in CORE_BONES if b in sk.joint_names], dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Options and result
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FitOptions:
    """Knobs of the fit; the defaults are what docs/fitting.md measures.

    max_matched: points sent to the KD-tree (a random subset; support and init come from them).
    max_points / per_bone: the solver's subset, at most `per_bone` points per dominant bone.
    k_nearest: skin weights of the solver's points blend this many nearest surface samples
        (the matched subset uses the nearest one: its dominant bone is all that counts there).
    kabsch_iterations: robust reweightings of the per-bone Kabsch that initialises the pose.
    loss, f_scale: robust loss on the data rows and its scale, a fraction of body length.
    pose_weight, scale_weight: prior weights per unit Mahalanobis distance / unit log-scale,
        against the data rows in body lengths (both grow with sqrt(points), so the balance does
        not depend on max_points).
    min_support: matched points below which a bone (with all below it) is unsupported.
    unsupported: "mirror" (an unsupported bone copies its supported left/right partner,
        mirrored; else the prior mean) or "prior" (always the prior mean).
    solver: "lm" (Levenberg-Marquardt on the normal equations) or "scipy" (least_squares, trf).
    max_iter, tol: LM iterations, and the relative cost decrease below which it stops;
    max_nfev: scipy evaluations.
    surface_pull: 0..1, how far each posed mesh vertex moves toward the observed points near it
        (the mean residual of the inlier points whose Q is within pull_radius body lengths).
    point_weights: also give skin weights to every input point (one KD-tree query for all).
    """

    max_matched: int = 1500
    max_points: int = 300
    per_bone: int = 12
    k_nearest: int = corr.K_NEAREST
    kabsch_iterations: int = 2
    loss: str = "soft_l1"
    f_scale: float = 0.01
    pose_weight: float = 0.001
    scale_weight: float = 0.004
    min_support: int = 3
    solver: str = "lm"
    max_iter: int = 10
    tol: float = 5e-3
    max_nfev: int = 300
    unsupported: str = "mirror"
    surface_pull: float = 0.0
    pull_radius: float = 0.03
    point_weights: bool = True
    seed: int = 0


@dataclass
class SkeletonFit:
    """A fitted rig, all numpy. J joints of the reference skeleton, V mesh vertices, N input
    points. Frames: see the module docstring.

    rest_skeleton: Skeleton, the instance's rest skeleton in model space (scaled template).
    rotations (J, 4) local quaternions w, x, y, z; root_translation (3,) zeros (M places the root).
    model_to_camera (4, 4) rigid M; global_scale (float); bone_scales (J,) length scales.
    joints (J, 3) posed heads in camera space; tails (J, 3) posed tails in camera space;
    posed_frames (J, 4, 4) posed bone frames in camera space (M @ G).
    point_valid (N,) bool matched points; point_skin_joints (N, 4), point_skin_weights (N, 4)
    (with point_weights off: only the matched subset, the others invalid with joint 0).
    bone_support (J,) matched points per dominant bone (of the max_matched subset);
    bone_residual (J,) median distance (m) of each bone's fitted points to the model (NaN: none);
    flags (J,) bit mask (FLAG_*; `bone_flags()` names them).
    rest_vertices (V, 3) the instance's rest mesh (model space); posed_vertices (V, 3) camera
    space; faces (F, 3); skin_joints (V, 4), skin_weights (V, 4). Skinning rest_vertices with
    rest_skeleton and rotations, then applying M, gives posed_vertices exactly (a surface pull
    is folded into rest_vertices through each vertex's inverse skinning transform).
    residual_rms, residual_median (m) over the solver's points; inlier_fraction (< 3 f_scale);
    match_fraction: share of the matched subset whose Q was kept; points_used by the solver;
    body_length (m) of the instance's rest mesh; cost, nfev, converged: the solver's;
    timings (s) per stage.
    """

    joint_names: tuple[str, ...]
    parents: np.ndarray
    rest_skeleton: Skeleton
    rotations: np.ndarray
    root_translation: np.ndarray
    model_to_camera: np.ndarray
    global_scale: float
    bone_scales: np.ndarray
    joints: np.ndarray
    tails: np.ndarray
    posed_frames: np.ndarray
    point_valid: np.ndarray
    point_skin_joints: np.ndarray
    point_skin_weights: np.ndarray
    bone_support: np.ndarray
    bone_residual: np.ndarray
    flags: np.ndarray
    rest_vertices: np.ndarray
    posed_vertices: np.ndarray
    faces: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    residual_rms: float
    residual_median: float
    inlier_fraction: float
    match_fraction: float
    points_used: int
    body_length: float
    cost: float
    nfev: int
    converged: bool
    timings: dict = field(default_factory=dict)

    def bone_flags(self) -> dict[str, list[str]]:
        return {n: flag_names(f) for n, f in zip(self.joint_names, self.flags) if f}


# ---------------------------------------------------------------------------------------------
# The least-squares problem
# ---------------------------------------------------------------------------------------------

class _ChainProblem:
    """Residuals and their analytic Jacobian for the kinematic-chain fit.

    Parameters x: [rho (3) model->camera rotation as axis-angle, t (3), log s_global (1),
    r_f (3 per free joint, local axis-angle), log s_g (1 per scale group)]. Residual rows: 3 per
    point, (M (sum_k w_k G_k D_k l_k) - P) * row_scale, in body lengths; then 3 per free joint
    (pose prior) and 1 per scale group (scale prior), both linear in x.

    Jacobian (model space p, camera u = R_M p):
      d u / d rho      = (R_M Jr(rho))[:, b] x u                 (Jr: SO(3) right Jacobian)
      d u / d t        = I,     d u / d log s_global = u          (every length scales with it)
      d u / d r_j      = (R_M G_j Jr(r_j))[:, b] x R_M (m_ij - W_ij h_j),
                         m_ij = sum of w_k x_k over i's bones k at or below j, W_ij their weight
      d u / d log s_k  = s_global s_k E_ik R_M Y_k,  E_ik constant: the bone-local y of the
                         point's part on k plus the y offsets of the children leading to its
                         other bones below k (Y_k: bone k's posed Y axis).
    The sparsity pattern is fixed at construction; `values` fills it in pattern order.
    """

    def __init__(self, ctx: FitContext, q: np.ndarray, p: np.ndarray, skin_joints: np.ndarray,
                 skin_weights: np.ndarray, free: np.ndarray, fixed_rot: np.ndarray, row_scale: float,
                 pose_weight: float, scale_weight: float):
        sk = ctx.skeleton
        nj = sk.num_joints
        self.n = n = len(q)
        self.p = p
        self.kj, self.kw = skin_joints, skin_weights
        binv = ctx.binv
        # Bone-local rest coordinates of every point under each of its 4 bones: (N, 4, 3).
        self.local = np.einsum("nsab,nb->nsa", binv[skin_joints, :3, :3], q) + binv[skin_joints, :3, 3]
        self.lr_rot, self.lr_t = ctx.lr_rot, ctx.lr_t
        self.parents = np.asarray(sk.parents)
        self.levels = ctx.levels
        self.level_parents = [self.parents[lev] for lev in ctx.levels]
        self.num_joints = nj
        self.free = free
        self.fixed_rot = fixed_rot
        groups = ctx.groups
        self.groups = groups
        self.n_groups = int(groups.max()) + 1
        self.row_scale = row_scale
        nf = len(free)
        self.col_rot = 7 + 3 * np.arange(nf)
        self.col_scale = 7 + 3 * nf
        self.n_params = self.col_scale + self.n_groups
        self.prior_mean = ctx.prior.mean[free]
        self.prior_w = pose_weight * np.sqrt(n) * ctx.prior.whiten[free]  # (F, 3, 3)
        self.scale_w = scale_weight * np.sqrt(n)

        anc = ctx.anc
        col_of_joint = np.full(nj, -1)
        col_of_joint[free] = np.arange(nf)
        # Points depend on the joints on the chains of their bones.
        dep = np.zeros((n, nj), dtype=bool)
        for s in range(skin_joints.shape[1]):
            dep |= anc[skin_joints[:, s]] & (skin_weights[:, s:s + 1] > 0)
        pi, pj = np.nonzero(dep[:, free])
        pj = free[pj]
        self.r_i, self.r_j, self.r_f = pi, pj, col_of_joint[pj]
        # coef[p, s] = w_is if bone k_is is joint j or hangs below it: the part of i that j moves.
        self.r_coef = skin_weights[pi] * anc[skin_joints[pi], pj[:, None]]
        self.r_w = self.r_coef.sum(axis=1)
        si, sk_ = np.nonzero(dep & (groups >= 0)[None, :])
        own = (skin_joints[si] == sk_[:, None]) * skin_weights[si] * self.local[si, :, 1]
        c = ctx.child[sk_[:, None], skin_joints[si]]  # (P, 4)
        below = np.where(c >= 0, self.lr_t[np.maximum(c, 0), 1], 0.0) * skin_weights[si]
        self.s_k, self.s_e = sk_, (own + below).sum(axis=1)
        # Bones of one group (left and right) merge into one (i, g) entry.
        key = si * self.n_groups + groups[sk_]
        ukey, self.s_inv = np.unique(key, return_inverse=True)
        self.sg_i, self.sg_g = ukey // self.n_groups, ukey % self.n_groups
        self.n_sg = len(ukey)

        # Pattern, in the order `values` writes: root, rotations, scales (data rows); priors.
        rows, cols = [], []
        a3 = np.arange(3)
        rows.append(np.repeat(3 * np.arange(n), 21) + np.tile(np.repeat(a3, 7), n))
        cols.append(np.tile(np.tile(np.arange(7), 3), n))
        rows.append(np.repeat(3 * pi[:, None] + a3, 3, axis=1).ravel())
        cols.append(np.tile(self.col_rot[self.r_f][:, None] + a3, (1, 3)).ravel())
        rows.append((3 * self.sg_i[:, None] + a3[None, :]).ravel())
        cols.append(np.repeat(self.col_scale + self.sg_g, 3))
        self.n_data_rows = r0 = 3 * n
        nd = sum(len(r) for r in rows)
        rows.append(np.repeat(r0 + 3 * np.arange(nf)[:, None] + a3, 3, axis=1).ravel())
        cols.append(np.tile(self.col_rot[:, None] + a3, (1, 3)).ravel())
        r1 = r0 + 3 * nf
        rows.append(r1 + np.arange(self.n_groups))
        cols.append(self.col_scale + np.arange(self.n_groups))
        self.n_rows = r1 + self.n_groups
        self.rows, self.cols = np.concatenate(rows), np.concatenate(cols)
        self.flat_data = self.rows[:nd] * self.n_params + self.cols[:nd]
        self.prior_vals = np.concatenate([self.prior_w.ravel(), np.full(self.n_groups, self.scale_w)])
        # The prior rows are linear with a block-diagonal Jacobian: their part of the normal
        # equations is constant, W_f^T W_f per joint and scale_w^2 per scale.
        h = np.zeros((self.n_params, self.n_params))
        blocks = np.einsum("fba,fbc->fac", self.prior_w, self.prior_w)
        ri = self.col_rot[:, None, None] + a3[None, :, None] + 0 * a3[None, None, :]
        ci = self.col_rot[:, None, None] + 0 * a3[None, :, None] + a3[None, None, :]
        h[ri, ci] = blocks
        gi = self.col_scale + np.arange(self.n_groups)
        h[gi, gi] = self.scale_w**2
        self.prior_hessian = h
        self._csr = None
        self._cache_x = None

    # -- model ------------------------------------------------------------------------------
    def unpack(self, x):
        return x[0:3], x[3:6], x[6], x[7:self.col_scale].reshape(-1, 3), x[self.col_scale:]

    def bone_scales(self, lsg):
        s = np.ones(self.num_joints)
        m = self.groups >= 0
        s[m] = np.exp(lsg[self.groups[m]])
        return s

    def local_rotations(self, x):
        r = self.fixed_rot.copy()
        r[self.free] = matrix_from_axis_angle(self.unpack(x)[3])
        return r

    def forward(self, x):
        """(R_M, posed model rotations (J,3,3), heads (J,3), x_is (N,4,3) model, p (N,3) model,
        u = R_M p (N,3), s_global, bone scales (J,)); camera points are u + t."""
        if self._cache_x is not None and np.array_equal(self._cache_x, x):
            return self._cache
        rho, t, ls, rot, lsg = self.unpack(x)
        sg = np.exp(ls)
        s = self.bone_scales(lsg)
        r_loc = self.local_rotations(x)
        local = self.lr_rot @ r_loc  # every joint's rest offset rotation times its pose, at once
        tl = sg * self.lr_t
        tl[1:, 1] *= s[self.parents[1:]]
        gr = np.empty_like(r_loc)
        gt = np.empty((self.num_joints, 3))
        gr[0], gt[0] = local[0], tl[0]
        for lev, par in zip(self.levels, self.level_parents):
            gp = gr[par]
            gr[lev] = gp @ local[lev]
            gt[lev] = (gp @ tl[lev, :, None])[:, :, 0] + gt[par]
        y = self.local * sg
        y[..., 1] *= s[self.kj]
        xs = np.einsum("nsab,nsb->nsa", gr[self.kj], y) + gt[self.kj]
        pm = np.einsum("ns,nsa->na", self.kw, xs)
        rm = matrix_from_axis_angle(rho)
        u = pm @ rm.T
        self._cache_x = x.copy()
        self._cache = (rm, gr, gt, xs, pm, u, sg, s)
        return self._cache

    def camera_points(self, x):
        return self.forward(x)[5] + x[3:6]

    def residuals(self, x):
        rot, lsg = self.unpack(x)[3:]
        data = ((self.camera_points(x) - self.p) * self.row_scale).ravel()
        pose = np.einsum("fab,fb->fa", self.prior_w, rot - self.prior_mean).ravel()
        return np.concatenate([data, pose, self.scale_w * lsg])

    def values(self, x):
        """Jacobian entries of the data rows, in pattern order (row_scale included)."""
        rho, t, ls, rot, lsg = self.unpack(x)
        rm, gr, gt, xs, pm, u, sg, s = self.forward(x)
        a = rm @ _right_jacobian(rho)
        droot = np.empty((self.n, 3, 7))
        # Column b is a[:, b] x u, written out row by row for all points at once.
        droot[:, 0, 0:3] = a[1] * u[:, 2, None] - a[2] * u[:, 1, None]
        droot[:, 1, 0:3] = a[2] * u[:, 0, None] - a[0] * u[:, 2, None]
        droot[:, 2, 0:3] = a[0] * u[:, 1, None] - a[1] * u[:, 0, None]
        droot[:, :, 3:6] = np.eye(3)
        droot[:, :, 6] = u
        aj = rm @ gr[self.free] @ _right_jacobian(rot)  # (F, 3, 3) camera-frame joint axes
        v = np.einsum("ps,psa->pa", self.r_coef, xs[self.r_i]) - self.r_w[:, None] * gt[self.r_j]
        v = v @ rm.T
        ap = aj[self.r_f]
        blk = np.empty((len(v), 3, 3))
        blk[:, 0, :] = ap[:, 1, :] * v[:, 2, None] - ap[:, 2, :] * v[:, 1, None]
        blk[:, 1, :] = ap[:, 2, :] * v[:, 0, None] - ap[:, 0, :] * v[:, 2, None]
        blk[:, 2, :] = ap[:, 0, :] * v[:, 1, None] - ap[:, 1, :] * v[:, 0, None]
        ys = gr[:, :, 1] @ rm.T  # (J, 3) camera-frame bone Y axes
        sv = (sg * s[self.s_k] * self.s_e)[:, None] * ys[self.s_k]
        vg = np.stack([np.bincount(self.s_inv, sv[:, c], minlength=self.n_sg) for c in range(3)], axis=1)
        return np.concatenate([droot.ravel(), blk.ravel(), vg.ravel()]) * self.row_scale

    def prior_gradient(self, r_prior):
        """J_prior^T r_prior for the prior rows' residuals."""
        g = np.zeros(self.n_params)
        nf = len(self.free)
        g[7:self.col_scale] = np.einsum("fba,fb->fa", self.prior_w, r_prior[:3 * nf].reshape(-1, 3)).ravel()
        g[self.col_scale:] = self.scale_w * r_prior[3 * nf:]
        return g

    def jacobian(self, x):
        """Sparse CSR Jacobian of all rows (for scipy.optimize.least_squares)."""
        if self._csr is None:
            m = sparse.coo_matrix((np.arange(len(self.rows), dtype=np.float64) + 1, (self.rows, self.cols)),
                                  shape=(self.n_rows, self.n_params)).tocsr()
            self._csr = (m.data.astype(np.int64) - 1, m.indices, m.indptr)
        perm, indices, indptr = self._csr
        vals = np.concatenate([self.values(x), self.prior_vals])
        return sparse.csr_matrix((vals[perm], indices, indptr), shape=(self.n_rows, self.n_params))

    def data_jacobian(self, x):
        """Dense Jacobian of the data rows (3N, n_params)."""
        j = np.zeros((self.n_data_rows, self.n_params))
        j.ravel()[self.flat_data] = self.values(x)
        return j


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

LOSSES = ("soft_l1", "cauchy", "huber", "linear")


def _rho(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust loss rho(z) of squared scaled residuals z, with rho' and rho'' (scipy's losses)."""
    if kind == "soft_l1":
        t = 1 + z
        return 2 * (np.sqrt(t) - 1), 1 / np.sqrt(t), -0.5 * t**-1.5
    if kind == "cauchy":
        t = 1 + z
        return np.log1p(z), 1 / t, -1 / t**2
    if kind == "huber":
        mask = z <= 1
        zs = np.maximum(z, 1e-12)
        return (np.where(mask, z, 2 * np.sqrt(zs) - 1), np.where(mask, 1.0, 1 / np.sqrt(zs)),
                np.where(mask, 0.0, -0.5 * zs**-1.5))
    if kind == "linear":
        return z, np.ones_like(z), np.zeros_like(z)
    raise DualPMError(f"fit: unknown loss {kind!r}; one of {', '.join(LOSSES)}")


def _data_loss(n_data: int, kind: str):
    """A least_squares loss callable: `kind` on the first n_data rows, plain squares on the
    prior rows (a robust loss there would let a bad pose escape its prior)."""
    _rho(np.zeros(1), kind)

    def loss(z):
        rho = np.empty((3, len(z)))
        rho[0], rho[1], rho[2] = z, 1.0, 0.0
        rho[0, :n_data], rho[1, :n_data], rho[2, :n_data] = _rho(z[:n_data], kind)
        return rho
    return loss


@dataclass
class _Solution:
    x: np.ndarray
    cost: float
    nfev: int
    converged: bool


def _cost(problem: _ChainProblem, x, kind: str, f_scale: float) -> tuple[float, np.ndarray]:
    r = problem.residuals(x)
    nd = problem.n_data_rows
    rho = _rho((r[:nd] / f_scale) ** 2, kind)[0]
    return 0.5 * (f_scale**2 * rho.sum() + r[nd:] @ r[nd:]), r


def _levenberg_marquardt(problem: _ChainProblem, x0, kind: str, f_scale: float, max_iter: int,
                         tol: float = 1e-3) -> _Solution:
    """Levenberg-Marquardt on the normal equations with iteratively reweighted robust loss.

    The objective is scipy's least_squares(loss=kind, f_scale) on the data rows plus the plain
    squared priors: 0.5 sum f_scale^2 rho((r/f_scale)^2) + 0.5 |prior|^2. Weights rho' make each
    step a weighted Gauss-Newton step (IRLS), so a fixed point has zero gradient of that
    objective. J^T W J is formed densely over the data rows (dsyrk on a few hundred points), the
    constant prior part is added, and the damped (n, n) system, n ~ 140, is solved by Cholesky.
    """
    from scipy.linalg import blas, cho_factor, cho_solve

    nd = problem.n_data_rows
    x = x0.copy()
    cost, r = _cost(problem, x, kind, f_scale)
    nfev, lam, converged = 1, 1e-3, False
    idx = np.arange(problem.n_params)
    for _ in range(max_iter):
        w = _rho((r[:nd] / f_scale) ** 2, kind)[1]
        jd = problem.data_jacobian(x)
        jw = jd * np.sqrt(w)[:, None]
        h = blas.dsyrk(1.0, jw.T, trans=0, lower=0) + problem.prior_hessian  # upper triangle valid
        g = jd.T @ (w * r[:nd]) + problem.prior_gradient(r[problem.n_data_rows:])
        diag = np.maximum(h[idx, idx], 1e-12)
        step, improved, rel = None, False, 0.0
        for _ in range(8):
            a = h.copy()
            a[idx, idx] += lam * diag
            try:
                step = -cho_solve(cho_factor(a, lower=False, overwrite_a=True, check_finite=False), g,
                                  check_finite=False)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            x_new = x + step
            cost_new, r_new = _cost(problem, x_new, kind, f_scale)
            nfev += 1
            if cost_new < cost:
                rel = (cost - cost_new) / max(cost, 1e-300)
                x, r, cost = x_new, r_new, cost_new
                lam = max(lam / 5, 1e-9)
                improved = True
                break
            lam *= 8
        if not improved or rel < tol or np.max(np.abs(step)) < 1e-8:
            converged = True
            break
    return _Solution(x, float(cost), nfev, converged)


def _solve_scipy(problem: _ChainProblem, x0, kind: str, f_scale: float, max_nfev: int) -> _Solution:
    sol = least_squares(problem.residuals, x0, jac=problem.jacobian, method="trf", tr_solver="lsmr",
                        loss=_data_loss(problem.n_data_rows, kind), f_scale=f_scale, x_scale="jac",
                        max_nfev=max_nfev, ftol=1e-8, xtol=1e-8, gtol=1e-8)
    return _Solution(sol.x, float(sol.cost), int(sol.nfev), bool(sol.status > 0))


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------

def _check_points(p, q, stage: str = "fit") -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    for name, a in (("P", p), ("Q", q)):
        if a.ndim != 2 or a.shape[1] != 3:
            raise DualPMError(f"{stage}: {name} has shape {a.shape}, expected (N, 3)")
    if len(p) != len(q):
        raise DualPMError(f"{stage}: P has {len(p)} points but Q has {len(q)}")
    if len(p) == 0:
        raise DualPMError(f"{stage}: the point cloud is empty (0 points)")
    bad = ~(np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(q), axis=1))
    if np.any(bad):
        raise DualPMError(f"{stage}: {int(bad.sum())} of {len(p)} points have NaN or infinite coordinates "
                          f"(pointmap.extract_points drops them)")
    return p, q


def _stratified(dominant: np.ndarray, per_bone: int, total: int, rng) -> np.ndarray:
    """Indices: at most per_bone per dominant bone (random ones), then at most `total`, sorted."""
    order = rng.permutation(len(dominant))
    d = dominant[order]
    srt = np.argsort(d, kind="stable")
    ds = d[srt]
    rank = np.empty(len(d), dtype=np.int64)
    rank[srt] = np.arange(len(d)) - np.searchsorted(ds, ds, side="left")
    keep = order[rank < per_bone]
    if len(keep) > total:
        keep = rng.choice(keep, total, replace=False)
    return np.sort(keep)


@dataclass(frozen=True)
class _Matched:
    sub: np.ndarray  # indices of the matched subset in the input
    m: corr.Correspondence
    valid: np.ndarray  # indices into sub of kept matches
    support: np.ndarray  # (J,) kept matches per dominant bone


def _match_subset(p, q, index, max_matched: int, rng, min_support: int, names, stage: str) -> _Matched:
    n = len(p)
    sub = np.arange(n) if n <= max_matched else np.sort(rng.choice(n, max_matched, replace=False))
    # The nearest grid sample's weights (k=1) suffice to count support and group points by
    # bone; the solver's subset gets the k-nearest blend afterwards.
    m = corr.match(index, q[sub], k=1)
    valid = np.nonzero(m.valid)[0]
    if len(valid) < 10:
        raise DualPMError(f"{stage}: only {len(valid)} of {len(sub)} points have Q within "
                          f"{m.max_distance:.3f} m of the template; is Q in the canonical space?")
    support = np.bincount(m.dominant[valid], minlength=index.num_joints)
    held = np.nonzero(support >= min_support)[0]
    top = int(np.argmax(support))
    if support[top] >= ONE_BONE_FRACTION * len(valid):
        raise DualPMError(f"{stage}: all matched points lie on bone {names[top]!r} "
                          f"({support[top]} of {len(valid)}); a skeleton needs points on at least 3 bones")
    if len(held) < 3:
        bones = ", ".join(repr(names[j]) for j in held) or "none"
        raise DualPMError(f"{stage}: only {len(held)} bone(s) hold {min_support} or more matched points ({bones}); "
                          f"a skeleton needs points on at least 3 bones")
    return _Matched(sub, m, valid, support)


def fit(p: np.ndarray, q: np.ndarray, context: FitContext | None = None,
        options: FitOptions | None = None, *, index: corr.TemplateIndex | None = None,
        prior: PosePrior | None = None) -> SkeletonFit:
    """Fit the reference template's skeleton to observed points.

    p (N, 3) camera space and q (N, 3) canonical space, metres; `context` from `prepare()`
    (built here when absent; pass one to reuse it across fits). A Template may stand in for
    the context, with `index` and `prior` to reuse (prepare() then runs on every call, about
    2 ms without the index). Returns a SkeletonFit. Bad input (wrong shapes, empty, NaN, Q off
    the template, points on fewer than 3 bones) raises a one-line DualPMError.
    """
    with single_threaded_blas():
        return _fit(p, q, context, options, index, prior)


def _fit(p, q, context, options, index, prior) -> SkeletonFit:
    timings = {}
    tic = time.perf_counter()
    options = options or FitOptions()
    _rho(np.zeros(1), options.loss)
    p, q = _check_points(p, q)
    ctx = context if isinstance(context, FitContext) else prepare(context, prior, index)
    template, sk = ctx.template, ctx.skeleton
    nj = sk.num_joints
    rng = np.random.default_rng(options.seed)

    # -- correspondence and support -------------------------------------------------------
    mt = _match_subset(p, q, ctx.index, options.max_matched, rng, options.min_support, sk.joint_names, "fit")
    m, valid = mt.m, mt.valid
    subtree = ctx.anc.T.astype(np.int64) @ mt.support  # matched points on each bone or below it
    no_support = subtree < options.min_support
    flags = np.where(no_support, FLAG_NO_SUPPORT, 0) | np.where(
        ~no_support & ctx.has_skin & (mt.support < options.min_support), FLAG_WEAK_SUPPORT, 0)
    timings["correspondence"] = time.perf_counter() - tic

    # -- initialisation ---------------------------------------------------------------------
    tic = time.perf_counter()
    allp, allq = p[mt.sub[valid]], q[mt.sub[valid]]
    dom, dom_w = m.dominant[valid], m.skin_weights[valid, 0]
    core = np.isin(dom, ctx.core)
    if core.sum() < 20:
        core[:] = True
    r0, t0, s0 = robust_similarity(allq[core], allp[core], 0.03 * template.body_length, rng)
    # Per-bone robust Kabsch on every matched point that one bone dominates (weight > 0.5).
    rk, _, sv, res = grouped_kabsch(s0 * allq, allp, np.where(dom_w > 0.5, dom, -1), dom_w, nj,
                                    iterations=options.kabsch_iterations)
    cnt = np.bincount(dom[dom_w > 0.5], minlength=nj)
    kabsch_ok = (cnt >= 4) & (sv[:, 1] > 0.05 * np.maximum(sv[:, 0], 1e-12))
    # Gross outliers (a wrong Q or a stray P) sit far from their own bone's rigid fit: leave
    # them out of the solver's subset.
    inlier = ~np.isfinite(res) | (res <= OUTLIER_FRACTION * s0 * template.body_length)
    keep = np.nonzero(inlier)[0]
    pick = keep[_stratified(dom[keep], options.per_bone, options.max_points, rng)]
    fp, fq = allp[pick], allq[pick]
    if options.k_nearest > 1:
        mf = corr.match(ctx.index, fq, k=options.k_nearest, max_distance=np.inf)
        fj, fw = mf.skin_joints, mf.skin_weights
    else:
        fj, fw = m.skin_joints[valid[pick]], m.skin_weights[valid[pick]]
    free = np.nonzero(~ctx.fixed & ~no_support)[0]
    prior_rot = matrix_from_axis_angle(ctx.prior.mean)
    fixed_rot = np.where((no_support | ctx.fixed)[:, None, None], prior_rot, np.eye(3))
    fixed_rot[[sk.index(b) for b in FIXED_BONES if b in sk.joint_names] + [0]] = np.eye(3)
    local_rot = _init_local_rotations(ctx, rk, kabsch_ok, r0, free, fixed_rot, prior_rot)
    problem = _ChainProblem(ctx, fq, fp, fj, fw, free, fixed_rot, row_scale=1.0 / (s0 * template.body_length),
                            pose_weight=options.pose_weight, scale_weight=options.scale_weight)
    x0 = np.zeros(problem.n_params)
    x0[0:3] = quat_to_axis_angle(matrix_to_quat(r0))
    x0[3:6] = t0
    x0[6] = np.log(s0)
    x0[7:problem.col_scale] = quat_to_axis_angle(matrix_to_quat(local_rot[free])).ravel()
    timings["init"] = time.perf_counter() - tic

    # -- refinement -------------------------------------------------------------------------
    tic = time.perf_counter()
    if options.solver == "lm":
        sol = _levenberg_marquardt(problem, x0, options.loss, options.f_scale, options.max_iter, options.tol)
    elif options.solver == "scipy":
        sol = _solve_scipy(problem, x0, options.loss, options.f_scale, options.max_nfev)
    else:
        raise DualPMError(f"fit: unknown solver {options.solver!r}; one of lm, scipy")
    x = sol.x
    timings["solve"] = time.perf_counter() - tic

    # -- outputs ----------------------------------------------------------------------------
    tic = time.perf_counter()
    rm, gr, gt, xs, pm, u, sg, scales = problem.forward(x)
    cam = u + x[3:6]
    local = problem.local_rotations(x)
    if options.unsupported == "mirror":
        # Unsupported bones carry no data, so setting them after the solve changes nothing else.
        local = _mirror_unsupported(sk, local, no_support)
    elif options.unsupported != "prior":
        raise DualPMError(f"fit: unknown unsupported-bone policy {options.unsupported!r}; one of mirror, prior")
    quats = matrix_to_quat(local)
    rest = scaled_rest_skeleton(sk, sg, scales)
    mcam = np.eye(4)
    mcam[:3, :3], mcam[:3, 3] = rm, x[3:6]
    g = rest.forward_kinematics(quats)
    posed = mcam @ g
    res = np.linalg.norm(cam - fp, axis=1)
    bone_res = group_median(res, fj[:, 0], nj)
    rest_v = instance_rest_points(sk, template.vertices, template.skin_joints, template.skin_weights, sg, scales,
                                  instance=rest)
    blen = float(np.ptp(rest_v[:, 1]))
    flags = flags | np.where(np.nan_to_num(bone_res, nan=0.0) > HIGH_RESIDUAL * blen, FLAG_HIGH_RESIDUAL, 0)
    smat = rest.skinning_matrices(g)
    posed_v = linear_blend_skinning(rest_v, template.skin_joints, template.skin_weights, smat) @ rm.T + x[3:6]
    close = res < 3 * options.f_scale * blen
    if options.surface_pull > 0:
        rest_v, posed_v = _pull_surface(template, rest_v, posed_v, smat, rm, fq, fp - cam, close, options)
    n = len(p)
    if options.point_weights:
        mall = corr.match(ctx.index, q, k=1)
        pv, psj, psw = mall.valid, mall.skin_joints, mall.skin_weights
    else:
        pv, psj, psw = np.zeros(n, dtype=bool), np.zeros((n, 4), dtype=np.int64), np.zeros((n, 4))
        psw[:, 0] = 1
        pv[mt.sub], psj[mt.sub], psw[mt.sub] = m.valid, m.skin_joints, m.skin_weights
    timings["output"] = time.perf_counter() - tic
    timings["total"] = sum(timings.values())
    return SkeletonFit(
        joint_names=tuple(sk.joint_names), parents=np.asarray(sk.parents).copy(), rest_skeleton=rest,
        rotations=quats, root_translation=np.zeros(3), model_to_camera=mcam, global_scale=float(sg),
        bone_scales=scales, joints=posed[:, :3, 3], tails=rest.posed_tails(posed), posed_frames=posed,
        point_valid=pv, point_skin_joints=psj, point_skin_weights=psw, bone_support=mt.support,
        bone_residual=bone_res, flags=flags.astype(np.int64), rest_vertices=rest_v, posed_vertices=posed_v,
        faces=np.asarray(template.faces).copy(), skin_joints=np.asarray(template.skin_joints).copy(),
        skin_weights=np.asarray(template.skin_weights).copy(), residual_rms=float(np.sqrt(np.mean(res**2))),
        residual_median=float(np.median(res)), inlier_fraction=float(np.mean(close)),
        match_fraction=float(np.mean(m.valid)), points_used=int(len(fp)), body_length=blen,
        cost=sol.cost, nfev=sol.nfev, converged=sol.converged, timings=timings)


def _init_local_rotations(ctx: FitContext, rk, ok, r0, free, fixed_rot, prior_rot) -> np.ndarray:
    """Local rotations (J, 3, 3) from per-bone Kabsch rotations rk (J, 3, 3), walked down the chain.

    Bone k's Kabsch rotation takes its points' rest positions (s0 Q) onto P; its posed
    model-space frame is then r0^T R_k B_k, and its local rotation is what turns the parent's
    posed frame (times the rest offset) into it. Bones whose Kabsch is ill-posed (`ok` False:
    fewer than 4 points, or nearly collinear ones) start at the prior mean.
    """
    sk = ctx.skeleton
    nj = sk.num_joints
    is_free = np.zeros(nj, dtype=bool)
    is_free[free] = True
    target = np.einsum("ab,jbc,jcd->jad", r0.T, rk, sk.rest_frames)  # posed model frames
    gr = np.empty((nj, 3, 3))
    local = fixed_rot.copy()
    for j in range(nj):
        pred = ctx.lr_rot[0] if j == 0 else gr[sk.parents[j]] @ ctx.lr_rot[j]
        if is_free[j]:
            local[j] = pred.T @ target[j] if ok[j] else prior_rot[j]
        gr[j] = pred @ local[j]
    return local


def mirror_rotation(skeleton: Skeleton, src: int, dst: int, rotation: np.ndarray) -> np.ndarray:
    """The local rotation of bone `dst` that mirrors `rotation` of bone `src` across the
    sagittal plane (x -> -x in model space): B_dst^T S B_src R B_src^T S B_dst, S = diag(-1, 1, 1),
    with B the rest bone axes (model space)."""
    s = np.diag([-1.0, 1.0, 1.0])
    a = skeleton.rest_frames[dst].T @ s @ skeleton.rest_frames[src]
    return a @ rotation @ a.T


def _mirror_unsupported(sk: Skeleton, local: np.ndarray, no_support: np.ndarray) -> np.ndarray:
    """Unsupported bones whose mirror partner is supported copy its mirrored local rotation:
    a hidden leg of a standing, jumping or lying animal is closer to its partner's pose than to
    the mean pose (docs/fitting.md measures it)."""
    out = local.copy()
    for j in np.nonzero(no_support)[0]:
        m = mirror_name(sk.joint_names[j])
        if m is not None and m in sk.joint_names and not no_support[sk.index(m)]:
            out[j] = mirror_rotation(sk, sk.index(m), j, local[sk.index(m)])
    return out


def _pull_surface(template, rest_v, posed_v, smat, rm, q, residual, inlier, options):
    """Move each vertex by surface_pull times the mean residual of the inlier points whose Q lies
    within pull_radius body lengths of the vertex's canonical position; the same move goes into
    the rest mesh through the inverse of the vertex's blended skinning transform, so skinning
    the rest mesh still gives the posed one exactly."""
    from scipy.spatial import cKDTree

    if not np.any(inlier):
        return rest_v, posed_v
    qi, ri = q[inlier], residual[inlier]
    d, nb = cKDTree(qi).query(template.canonical_vertices, k=8,
                              distance_upper_bound=options.pull_radius * template.body_length)
    found = np.isfinite(d)
    nb = np.where(found, nb, 0)
    cnt = found.sum(axis=1)
    delta = np.einsum("vk,vkc->vc", found.astype(np.float64), ri[nb]) / np.maximum(cnt, 1)[:, None]
    delta *= options.surface_pull
    lin = np.einsum("vk,vkij->vij", template.skin_weights, smat[template.skin_joints, :3, :3])
    rest_delta = np.linalg.solve(lin, (delta @ rm)[..., None])[..., 0]
    return rest_v + rest_delta, posed_v + delta


# ---------------------------------------------------------------------------------------------
# Baseline: the reference code's per-bone Kabsch
# ---------------------------------------------------------------------------------------------

@dataclass
class KabschBaseline:
    """Per-bone Kabsch without a kinematic chain (the reference code's method).

    joints (J, 3) camera-space heads, each carried by its own bone's rigid transform (bones with
    fewer than 3 points, or collinear ones, use their parent's); transforms (J, 4, 4) from the
    scaled template's model space to camera space; global_scale from a robust similarity over
    all matched points (the reference works in normalised units; this keeps species of other
    sizes comparable); fitted (J,) bones with their own transform; seconds taken.
    """

    joints: np.ndarray
    transforms: np.ndarray
    global_scale: float
    fitted: np.ndarray
    seconds: float


def fit_kabsch_baseline(p: np.ndarray, q: np.ndarray, context: FitContext | None = None,
                        options: FitOptions | None = None) -> KabschBaseline:
    """The baseline on the same matched subset as `fit` (same options and seed)."""
    with single_threaded_blas():
        return _fit_kabsch_baseline(p, q, context, options)


def _fit_kabsch_baseline(p, q, context, options) -> KabschBaseline:
    tic = time.perf_counter()
    options = options or FitOptions()
    p, q = _check_points(p, q, "baseline")
    ctx = context if context is not None else prepare()
    sk = ctx.skeleton
    rng = np.random.default_rng(options.seed)
    mt = _match_subset(p, q, ctx.index, options.max_matched, rng, 3, sk.joint_names, "baseline")
    vp, vq = p[mt.sub[mt.valid]], q[mt.sub[mt.valid]]
    dom = mt.m.dominant[mt.valid]
    r0, t0, s0 = robust_similarity(vq, vp, 0.03 * ctx.template.body_length, rng)
    nj = sk.num_joints
    rk, tk, sv, _ = grouped_kabsch(s0 * vq, vp, dom, np.ones(len(dom)), nj)
    cnt = np.bincount(dom, minlength=nj)
    ok = (cnt >= 3) & (sv[:, 1] > 1e-3 * np.maximum(sv[:, 0], 1e-12))
    tr = np.tile(np.eye(4), (nj, 1, 1))
    for j in range(nj):
        if ok[j]:
            tr[j, :3, :3], tr[j, :3, 3] = rk[j], tk[j]
        elif j > 0:
            tr[j] = tr[sk.parents[j]]
        else:
            tr[j, :3, :3], tr[j, :3, 3] = r0, t0
    heads = s0 * sk.rest_heads
    joints = np.einsum("jab,jb->ja", tr[:, :3, :3], heads) + tr[:, :3, 3]
    return KabschBaseline(joints, tr, float(s0), ok, time.perf_counter() - tic)


def build_default_prior(templates_dir: str, out: str | None = None) -> PosePrior:
    """Rebuild assets/pose_prior.npz from every baked template in `templates_dir`."""
    import glob

    from . import template as template_mod

    paths = sorted(glob.glob(os.path.join(templates_dir, "*.npz")))
    if not paths:
        raise DualPMError(f"{templates_dir}: no baked templates (*.npz)")
    prior = build_pose_prior([template_mod.load(p) for p in paths], template_mod.load_default())
    save_pose_prior(prior, out or default_prior_path())
    return prior


if __name__ == "__main__":  # python -m dualpm_addon.fit_skeleton .cache/templates
    import sys

    build_default_prior(sys.argv[1] if len(sys.argv) > 1 else ".cache/templates")
