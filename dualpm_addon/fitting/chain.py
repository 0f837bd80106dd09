"""The kinematic model: the fit's parameter vector, forward kinematics, and points bound to the
chain with their analytic Jacobian.

Parameters x = [rho (3) model->camera rotation as axis-angle, t (3), log s_global (1),
r_f (3 per free joint, local axis-angle), log s_g (1 per scale group: left and right bones share
one), log focal factor (1, photo fits only), log t_p (1 per thickness part, photo fits only)].

A point bound to the chain is a rest point q (the template's rest pose, = Q) with up to four
skin bones k and weights w. Its model-space position is sum_k w_k G_k D_k l_k, l_k = B_k^-1 q its
bone-local rest coordinates, D_k = s diag(t_k, s_k, t_k) (length along the bone's Y axis,
thickness across it), G_k the posed bone frames; its camera-space position is
u + t = R_M p + t.

Jacobian (camera u = R_M p):
  d u / d rho      = (R_M Jr(rho))[:, b] x u                 (Jr: SO(3) right Jacobian)
  d u / d t        = I,     d u / d log s_global = u          (every length scales with it)
  d u / d r_j      = (R_M G_j Jr(r_j))[:, b] x R_M (m_ij - W_ij h_j),
                     m_ij = sum of w_k x_k over i's bones k at or below j, W_ij their weight
  d u / d log s_k  = s_global s_k E_ik R_M Y_k,  E_ik constant: the bone-local y of the
                     point's part on k plus the y offsets of the children leading to its
                     other bones below k (Y_k: bone k's posed Y axis)
  d u / d log t_p  = sum over i's bones k of part p of w_k R_M G_k s t_k (l_kx e_x + l_kz e_z)
                     (thickness moves no joint)
"""

from __future__ import annotations

import numpy as np

from ..rotations import matrix_from_axis_angle
from .rig import FitContext, right_jacobian


class ChainModel:
    """Parameter layout and forward kinematics, shared by every term of one fit.

    free: joint ids with rotation parameters; fixed_rot (J, 3, 3) local rotations of the others
    (a hypothesis may replace it: `set_fixed`). photo: add the focal and thickness parameters.
    """

    def __init__(self, ctx: FitContext, free: np.ndarray, fixed_rot: np.ndarray, photo: bool = False):
        sk = ctx.skeleton
        self.ctx = ctx
        self.num_joints = sk.num_joints
        self.parents = np.asarray(sk.parents)
        self.levels = ctx.levels
        self.level_parents = [self.parents[lev] for lev in ctx.levels]
        self.lr_rot, self.lr_t = ctx.lr_rot, ctx.lr_t
        self.free = np.asarray(free)
        self.fixed_rot = np.array(fixed_rot, dtype=np.float64)
        self.groups = ctx.groups
        self.n_groups = int(ctx.groups.max()) + 1
        nf = len(self.free)
        self.col_rot = 7 + 3 * np.arange(nf)
        self.col_scale = 7 + 3 * nf
        self.photo = bool(photo)
        self.parts = ctx.parts
        self.n_parts = int(ctx.parts.max()) + 1 if photo else 0
        self.col_focal = self.col_scale + self.n_groups if photo else -1
        self.col_thick = self.col_focal + 1 if photo else -1
        self.n_params = self.col_scale + self.n_groups + (1 + self.n_parts if photo else 0)
        self._key = None
        self._bones = None
        self.version = 0  # bumped when fixed_rot changes, so bound points drop their caches
        self.root_only = False  # while set, bound points give only the root's Jacobian columns
        # while set, bound points leave the shape's columns (scales, thickness) of their Jacobian at
        # zero: a solve of the pose alone (the clip fit's frames) never reads them
        self.pose_only = False

    def set_fixed(self, fixed_rot: np.ndarray) -> None:
        self.fixed_rot = np.array(fixed_rot, dtype=np.float64)
        self._key = None
        self.version += 1

    # -- parameter access ------------------------------------------------------------------
    def rotations_block(self, x):
        return x[7:self.col_scale].reshape(-1, 3)

    def scale_block(self, x):
        return x[self.col_scale:self.col_scale + self.n_groups]

    def log_focal(self, x) -> float:
        return float(x[self.col_focal]) if self.photo else 0.0

    def thickness_block(self, x):
        return x[self.col_thick:self.col_thick + self.n_parts] if self.photo else np.zeros(0)

    def bone_scales(self, x) -> np.ndarray:
        s = np.ones(self.num_joints)
        m = self.groups >= 0
        s[m] = np.exp(self.scale_block(x)[self.groups[m]])
        return s

    def bone_thickness(self, x) -> np.ndarray:
        t = np.ones(self.num_joints)
        if self.photo:
            m = self.parts >= 0
            # A trial step may be wild; e^3 (20 times thicker) is past any animal and keeps it finite.
            t[m] = np.exp(np.clip(self.thickness_block(x)[self.parts[m]], -3.0, 3.0))
        return t

    def local_rotations(self, x) -> np.ndarray:
        r = self.fixed_rot.copy()
        r[self.free] = matrix_from_axis_angle(self.rotations_block(x))
        return r

    def active(self, root_only: bool) -> np.ndarray:
        """Parameter ids a solve moves: all, or the root's (rotation, translation, scale, focal)."""
        if not root_only:
            return np.arange(self.n_params)
        ids = list(range(7)) + ([self.col_focal] if self.photo else [])
        return np.array(ids)

    # -- forward kinematics ----------------------------------------------------------------
    def bones(self, x):
        """(R_M, posed model rotations gr (J,3,3), heads gt (J,3), s_global, bone scales (J,),
        thickness (J,)), cached for the last x."""
        key = (self.version, x.tobytes())
        if self._key == key:
            return self._bones
        sg = float(np.exp(x[6]))
        s = self.bone_scales(x)
        local = self.lr_rot @ self.local_rotations(x)  # every joint's rest offset rotation times its pose
        tl = sg * self.lr_t
        tl[1:, 1] *= s[self.parents[1:]]
        gr = np.empty_like(local)
        gt = np.empty((self.num_joints, 3))
        gr[0], gt[0] = local[0], tl[0]
        for lev, par in zip(self.levels, self.level_parents):
            gp = gr[par]
            gr[lev] = gp @ local[lev]
            gt[lev] = (gp @ tl[lev, :, None])[:, :, 0] + gt[par]
        rm = matrix_from_axis_angle(x[0:3])
        self._key, self._bones = key, (rm, gr, gt, sg, s, self.bone_thickness(x))
        return self._bones


class BoundPoints:
    """N rest points bound to the chain: camera-space positions and their dense Jacobian.

    q (N, 3) rest points in the template's rest pose; skin_joints, skin_weights (N, 4).
    """

    def __init__(self, model: ChainModel, q: np.ndarray, skin_joints: np.ndarray, skin_weights: np.ndarray):
        ctx = model.ctx
        self.model = model
        self.n = n = len(q)
        self.kj = np.asarray(skin_joints)
        self.kw = np.asarray(skin_weights, dtype=np.float64)
        binv = ctx.binv
        # Bone-local rest coordinates of every point under each of its 4 bones: (N, 4, 3).
        self.local = np.einsum("nsab,nb->nsa", binv[self.kj, :3, :3], q) + binv[self.kj, :3, 3]
        free, groups, anc = model.free, model.groups, ctx.anc
        nj = model.num_joints
        col_of_joint = np.full(nj, -1)
        col_of_joint[free] = np.arange(len(free))
        # Points depend on the joints on the chains of their bones.
        dep = np.zeros((n, nj), dtype=bool)
        for s in range(self.kj.shape[1]):
            dep |= anc[self.kj[:, s]] & (self.kw[:, s:s + 1] > 0)
        pi, pj = np.nonzero(dep[:, free])
        pj = free[pj]
        self.r_i, self.r_j, self.r_f = pi, pj, col_of_joint[pj]
        # coef[p, s] = w_is if bone k_is is joint j or hangs below it: the part of i that j moves.
        self.r_coef = self.kw[pi] * anc[self.kj[pi], pj[:, None]]
        self.r_w = self.r_coef.sum(axis=1)
        si, sk_ = np.nonzero(dep & (groups >= 0)[None, :])
        own = (self.kj[si] == sk_[:, None]) * self.kw[si] * self.local[si, :, 1]
        c = ctx.child[sk_[:, None], self.kj[si]]  # (P, 4)
        below = np.where(c >= 0, model.lr_t[np.maximum(c, 0), 1], 0.0) * self.kw[si]
        self.s_k, self.s_e = sk_, (own + below).sum(axis=1)
        # Bones of one group (left and right) merge into one (i, g) entry.
        key = si * model.n_groups + groups[sk_]
        ukey, self.s_inv = np.unique(key, return_inverse=True)
        self.sg_i, self.sg_g = ukey // model.n_groups, ukey % model.n_groups
        # Thickness: each (point, part) pair of its skin bones.
        if model.photo:
            part = np.where(self.kw > 0, model.parts[self.kj], -1)  # (N, 4)
            ti, ts = np.nonzero(part >= 0)
            tkey = ti * max(model.n_parts, 1) + part[ti, ts]
            ukey, self.t_inv = np.unique(tkey, return_inverse=True)
            self.t_i, self.t_p = ukey // model.n_parts, ukey % model.n_parts
            self.t_src = (ti, ts)
        self._key = None

    def forward(self, x):
        """(bone-space points xs (N,4,3) model, p (N,3) model, u = R_M p (N,3)), cached."""
        key = (self.model.version, x.tobytes())
        if self._key == key:
            return self._fwd
        rm, gr, gt, sg, s, th = self.model.bones(x)
        y = self.local * sg
        y[..., 1] *= s[self.kj]
        if self.model.photo:
            y[..., 0] *= th[self.kj]
            y[..., 2] *= th[self.kj]
        xs = np.einsum("nsab,nsb->nsa", gr[self.kj], y) + gt[self.kj]
        pm = np.einsum("ns,nsa->na", self.kw, xs)
        u = pm @ rm.T
        self._key, self._fwd, self._jac, self._jac_root = key, (xs, pm, u), None, None
        return self._fwd

    def camera(self, x) -> np.ndarray:
        return self.forward(x)[2] + x[3:6]

    def jacobian(self, x) -> np.ndarray:
        """(N, 3, n_params) d camera / d x, cached for the last x; while model.root_only is set,
        (N, 3, len(model.active(True))): the root's columns alone (a root-only solve needs no
        more, and they are a small part of the cost); while model.pose_only is set, the scale and
        thickness columns are zero."""
        xs, pm, u = self.forward(x)
        mode = (self.model.root_only, self.model.pose_only)
        if self._jac is not None and self._jac_root == mode:
            return self._jac
        model = self.model
        rm, gr, gt, sg, s, th = model.bones(x)
        root_only = model.root_only
        j = np.zeros((self.n, 3, len(model.active(True)) if root_only else model.n_params))
        a = rm @ right_jacobian(x[0:3])
        # Column b is a[:, b] x u, written out row by row for all points at once.
        j[:, 0, 0:3] = a[1] * u[:, 2, None] - a[2] * u[:, 1, None]
        j[:, 1, 0:3] = a[2] * u[:, 0, None] - a[0] * u[:, 2, None]
        j[:, 2, 0:3] = a[0] * u[:, 1, None] - a[1] * u[:, 0, None]
        j[:, :, 3:6] = np.eye(3)
        j[:, :, 6] = u
        self._jac_root = mode
        if root_only:  # the focal column, when there is one, is the projection's, not the points'
            self._jac = j
            return j
        if len(model.free):
            aj = rm @ gr[model.free] @ right_jacobian(model.rotations_block(x))  # (F, 3, 3) camera axes
            v = np.einsum("ps,psa->pa", self.r_coef, xs[self.r_i]) - self.r_w[:, None] * gt[self.r_j]
            v = v @ rm.T
            ap = aj[self.r_f]
            blk = np.empty((len(v), 3, 3))
            blk[:, 0, :] = ap[:, 1, :] * v[:, 2, None] - ap[:, 2, :] * v[:, 1, None]
            blk[:, 1, :] = ap[:, 2, :] * v[:, 0, None] - ap[:, 0, :] * v[:, 2, None]
            blk[:, 2, :] = ap[:, 0, :] * v[:, 1, None] - ap[:, 1, :] * v[:, 0, None]
            cols = model.col_rot[self.r_f][:, None] + np.arange(3)
            j[self.r_i[:, None], :, cols] = blk.transpose(0, 2, 1)
        if model.pose_only:
            self._jac = j
            return j
        ys = gr[:, :, 1] @ rm.T  # (J, 3) camera-frame bone Y axes
        sv = (sg * s[self.s_k] * self.s_e)[:, None] * ys[self.s_k]
        vg = np.stack([np.bincount(self.s_inv, sv[:, c], minlength=len(self.sg_i)) for c in range(3)], axis=1)
        j[self.sg_i, :, model.col_scale + self.sg_g] = vg
        if model.photo and len(self.t_i):
            ti, ts = self.t_src
            k = self.kj[ti, ts]
            loc = self.local[ti, ts] * (sg * th[k])[:, None]
            loc[:, 1] = 0.0
            tv = self.kw[ti, ts, None] * np.einsum("nab,nb->na", gr[k], loc) @ rm.T
            tg = np.stack([np.bincount(self.t_inv, tv[:, c], minlength=len(self.t_i)) for c in range(3)], axis=1)
            j[self.t_i, :, model.col_thick + self.t_p] = tg
        self._jac = j
        return j
