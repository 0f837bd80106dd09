"""The instance's shape: the character's rest surface deformed toward the photo's evidence.

The fit gives the instance's rest surface (the template under its bone scales and thickness,
fitting.instance_rest_points). What the rig cannot say is in the evidence:

* the amodal points, through their Q: each observed point P (pipeline's points['P_observed'],
  the cloud before the photo fit moved it onto the rig), unskinned through the fitted pose
  (as pipeline.unskin does), lies at r_p in the rest pose; the template would put its Q at c_p.
  r_p - c_p is how the animal differs from the template there; per fine vertex the robust mean
  of the offsets of the points whose Q is nearest it is a target displacement, weighted by how
  many points agree;
* the points' surface: each vertex pulled along its normal onto the mean of the rest points
  near it whose Q is near its own (point to plane, so a leg never snaps onto the other leg);
* the silhouette: the posed surface's outer rim, projected, should lie on the mask's outline;
  rim vertices move in the image plane, at their depth, to the nearest outline pixel (never to
  the photo's frame), the move carried into the rest pose by each vertex's skinning transform.

How much the points count follows how well the rig fits them (`trust`: an exact map's cloud
fits to ~2 % of the body length, the shipped predictor's to ~10 %, and such a cloud says more
about the predictor than about the animal).

The displacement d is solved on the welded, symmetric base mesh (the template's own ~1,100
vertices) and carried to the fine mesh by the Loop map S, so it is smooth by construction:

  sum_i w_i |(S d)_i - t_i|^2 + a |L d|^2_M + b |d|^2 + c sum_v |d_v - X d_mirror(v)|^2
      + e sum_(i,j facing) |(S d)_i - (S d)_j|^2

L the cotangent Laplacian of the base canonical mesh (thin plate: bending costs, so the surface
stays clean), |d|^2 keeping parts without evidence on the template, the mirror term (X =
diag(-1, 1, 1)) letting a hidden side follow its visible twin, and the last tying the two faces
of a thin part (an ear, the tail over the rump) so it moves as one. Targets never push a vertex
in by more than a share of its part's thickness nor out by more than a share of the gap in
front of it (`clearance`). The silhouette and surface targets are refreshed for a few rounds.
Last, `untangle` (repair.py) halves the displacement wherever the surface would cut itself where
the undeformed one did not. What depends on the template alone (Laplacian, mirror and facing
operators, Loop map, canonical search tree, edges) is built once per template
(operators.solver).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from .. import camera, silhouette
from ..errors import DualPMError
from ..fitting import instance_rest_points
from ..skinning import linear_blend_skinning
from .mesh import CharacterMesh, topology_and_mesh
from .operators import Solver, solver, vertex_normals
from .repair import instance_rest, untangle



@dataclass
class DeformOptions:
    """Weights of the shape solve (positions scaled to body length 1 inside the solve)."""

    smooth: float = 3e-4  # thin-plate weight a
    stay: float = 2e-3  # pull toward the template, b
    symmetry: float = 0.3  # mirror coupling, c
    points: float = 1.0  # weight of a fully supported vertex's point target
    silhouette: float = 1.0  # weight of a rim vertex's outline target
    support: int = 4  # points on a vertex for full weight
    max_offset: float = 0.2  # body lengths: a larger point offset is a mis-fit, not shape
    trust_residual: float = 0.03  # body lengths: the fit's median residual at which the points count half
    rounds: int = 3  # silhouette rounds
    silhouette_size: int = 256  # the mask is worked on at most this many pixels a side
    max_outline_px: float = 0.08  # of that size: an outline farther than this is not this rim's
    icp: float = 3.0  # weight of the point-to-plane pull onto the rest cloud
    icp_radius: float = 0.04  # body lengths
    icp_q_radius: float = 0.1  # body lengths: a point's Q must be this near the vertex's
    icp_neighbours: int = 6
    across: float = 0.5  # tie between facing surfaces (Solver.across)
    repair_rounds: int = 8  # rounds of halving the displacement where the surface cuts itself
    clearance: float = 0.4  # a target moves a vertex at most this share of its thickness in, of its gap out


# -- poses ---------------------------------------------------------------------------------------

def skinning_transforms(fit, skin_joints: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """(N, 3, 4) blended rest -> camera transforms of the fitted pose (model_to_camera applied)."""
    g = fit.rest_skeleton.forward_kinematics(fit.rotations)
    s = fit.rest_skeleton.skinning_matrices(g)
    blended = np.einsum("nk,nkij->nij", np.asarray(skin_weights, np.float64), s[np.asarray(skin_joints), :3, :])
    m = np.asarray(fit.model_to_camera, np.float64)
    out = np.einsum("ab,nbj->naj", m[:3, :3], blended)
    out[:, :, 3] += m[:3, 3]
    return out


def posed(character: CharacterMesh, fit) -> np.ndarray:
    """(V, 3) the character's rest vertices skinned by the fitted pose, in camera space."""
    g = fit.rest_skeleton.forward_kinematics(fit.rotations)
    v = linear_blend_skinning(character.vertices, character.skin_joints, character.skin_weights,
                              fit.rest_skeleton.skinning_matrices(g))
    m = np.asarray(fit.model_to_camera, np.float64)
    return v @ m[:3, :3].T + m[:3, 3]


# -- evidence ------------------------------------------------------------------------------------

def point_targets(sol: Solver, template, fit, p_cam: np.ndarray, q: np.ndarray, skin_joints: np.ndarray,
                  skin_weights: np.ndarray, valid: np.ndarray | None, options: DeformOptions):
    """(targets (W, 3), weights (W,)): rest-space displacement per fine welded vertex from the
    points' offsets r_p - c_p (see the module docstring), in metres."""
    nw = len(sol.fine_canonical)
    p_cam, q = np.asarray(p_cam, np.float64), np.asarray(q, np.float64)
    ok = np.all(np.isfinite(p_cam), axis=1) & np.all(np.isfinite(q), axis=1)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if ok.sum() == 0:
        return np.zeros((nw, 3)), np.zeros(nw), None
    p_cam, q, sj, sw = p_cam[ok], q[ok], np.asarray(skin_joints)[ok], np.asarray(skin_weights, np.float64)[ok]
    t = skinning_transforms(fit, sj, sw)
    rest = np.linalg.solve(t[:, :, :3], (p_cam - t[:, :, 3])[..., None])[..., 0]
    where = instance_rest_points(template.skeleton, q, sj, sw, fit.global_scale, fit.bone_scales,
                                 instance=fit.rest_skeleton, thickness=fit.thickness)
    off = rest - where
    blen = float(fit.body_length)
    cloud = (rest, q, cKDTree(rest))  # the tree serves every round's surface targets
    keep = np.linalg.norm(off, axis=1) < options.max_offset * blen
    # A Q far from the template surface matched nothing: its offset says nothing about shape.
    dq, nearest = sol.tree.query(q)
    keep &= dq < 0.05 * sol.body_length
    off, nearest = off[keep], nearest[keep]
    if len(off) == 0:
        return np.zeros((nw, 3)), np.zeros(nw), cloud
    count = np.bincount(nearest, minlength=nw).astype(np.float64)
    mean = np.zeros((nw, 3))
    for c in range(3):
        mean[:, c] = np.bincount(nearest, weights=off[:, c], minlength=nw)
    mean /= np.maximum(count, 1)[:, None]
    # One reweighting round: points far from their vertex's mean (another part, a mis-match)
    # drop out, so a vertex's target is the consensus of its points.
    res = np.linalg.norm(off - mean[nearest], axis=1)
    scale = np.maximum(np.median(res), 1e-3 * blen)
    w = 1.0 / (1.0 + (res / (2.0 * scale)) ** 2)
    wsum = np.bincount(nearest, weights=w, minlength=nw)
    for c in range(3):
        mean[:, c] = np.bincount(nearest, weights=w * off[:, c], minlength=nw)
    mean /= np.maximum(wsum, 1e-12)[:, None]
    weight = np.minimum(wsum / options.support, 1.0)
    return mean, weight, cloud


def surface_targets(rest: np.ndarray, faces: np.ndarray, canonical: np.ndarray, cloud, blen: float,
                    options: DeformOptions):
    """(targets (W, 3) moves, weights (W,)): each welded rest vertex toward the rest cloud along
    its normal (point to plane: the mean of its nearest points within `icp_radius`, among those
    whose Q is near the vertex's own, so a leg never snaps onto the other leg)."""
    nw = len(rest)
    if cloud is None or len(cloud[0]) == 0:
        return np.zeros((nw, 3)), np.zeros(nw)
    r, q, tree = cloud
    k = min(options.icp_neighbours, len(r))
    d, j = tree.query(rest, k=k, distance_upper_bound=options.icp_radius * blen)
    d, j = d.reshape(nw, k), j.reshape(nw, k)
    found = np.isfinite(d)
    jj = np.where(found, j, 0)
    found &= np.linalg.norm(q[jj] - canonical[:, None, :], axis=2) < options.icp_q_radius * blen
    cnt = found.sum(axis=1)
    mean = np.einsum("vk,vkc->vc", found.astype(np.float64), r[jj]) / np.maximum(cnt, 1)[:, None]
    n = vertex_normals(rest, faces)
    move = n * np.einsum("ij,ij->i", mean - rest, n)[:, None]
    weight = np.where(cnt > 0, options.icp * np.minimum(cnt / k, 1.0), 0.0)
    return np.where(cnt[:, None] > 0, move, 0.0), weight


def mask_frame(mask: np.ndarray, intrinsics: np.ndarray, size: int):
    """(mask (h, w) bool, intrinsics, known (h, w) bool) of the mask cropped to its box (+15 %)
    and resampled so its longer side is at most `size` pixels; None when the mask holds under 16
    pixels. Pixels beyond the photo repeat its edge (the animal may go on past the frame), and
    `known` is False there and on the photo's outermost pixels: an outline there is the frame's,
    not the animal's."""
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    if len(rows) < 16:
        return None
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    pad = 0.15 * max(y1 - y0, x1 - x0)
    box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    side = max(box[2] - box[0], box[3] - box[1])
    scale = min(1.0, size / side)
    w, h = max(int(round((box[2] - box[0]) * scale)), 8), max(int(round((box[3] - box[1]) * scale)), 8)
    k = camera.crop_intrinsics(np.asarray(intrinsics, np.float64), box, (h, w))
    # Nearest sample at each new pixel's centre.
    u = box[0] + (np.arange(w) + 0.5) * (box[2] - box[0]) / w
    v = box[1] + (np.arange(h) + 0.5) * (box[3] - box[1]) / h
    ui, vi = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    hh, ww = mask.shape
    out = mask[np.ix_(np.clip(vi, 0, hh - 1), np.clip(ui, 0, ww - 1))]
    margin = max(1.0, 1.0 / scale)  # one output pixel, in photo pixels
    known_u = (u >= margin) & (u <= ww - margin)
    known_v = (v >= margin) & (v <= hh - margin)
    return out, k, known_v[:, None] & known_u[None, :]


def clearance(rest: np.ndarray, faces: np.ndarray, neighbours: int = 24):
    """(inner (W,), outer (W,)) per welded vertex: the distance to the nearest vertex facing the
    other way (normals more than 120 degrees apart) behind it (the part's own thickness: an ear,
    a leg) and in front of it (the gap to another part: the tail over the rump). A move inward
    of more than the thickness folds the part through itself; one outward of more than the gap
    pushes it into its neighbour."""
    n = vertex_normals(rest, faces)
    k = min(neighbours, len(rest))
    d, j = cKDTree(rest).query(rest, k=k)
    opposite = np.einsum("ic,ikc->ik", n, n[j]) < -0.5
    side = np.einsum("ikc,ic->ik", rest[j] - rest[:, None, :], n)
    big = float(np.ptp(rest, axis=0).max())
    # None facing the other way among the k nearest: room enough (the part is broad there).
    inner = np.where(opposite & (side < 0), d, big).min(axis=1)
    outer = np.where(opposite & (side > 0), d, big).min(axis=1)
    return inner, outer


def clamp_normal(targets: np.ndarray, normals: np.ndarray, inner: np.ndarray, outer: np.ndarray,
                 fraction: float) -> np.ndarray:
    """Targets with their normal component kept within -fraction*inner .. fraction*outer."""
    along = np.einsum("ij,ij->i", targets, normals)
    kept = np.clip(along, -fraction * inner, fraction * outer)
    return targets + normals * (kept - along)[:, None]


def silhouette_targets(cam: np.ndarray, faces: np.ndarray, transforms: np.ndarray, mask: np.ndarray,
                       k: np.ndarray, options: DeformOptions, known: np.ndarray | None = None):
    """(targets (W, 3) rest-space displacements, weights (W,)) moving the welded vertices on the
    posed surface's outer rim (cam (W, 3) camera space) onto the mask's outline."""
    from scipy import ndimage

    nw = len(cam)
    h, w = mask.shape
    cover = silhouette.rasterize(cam, faces, k, (h, w))
    uv = camera.project(cam, k)
    # Outer rim: vertices seen edge-on that project onto the rendered outline (a rim inside the
    # silhouette, a leg against the body, has no outline of the mask to go to).
    normal = vertex_normals(cam, faces)
    view = cam / np.maximum(np.linalg.norm(cam, axis=1, keepdims=True), 1e-12)
    edge_on = np.abs(np.einsum("ij,ij->i", normal, view)) < 0.35
    ring = silhouette.outline(cover, width=2)
    ui = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, w - 1)
    vi = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, h - 1)
    inframe = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    rim = edge_on & inframe & ring[vi, ui] & (cam[:, 2] > 1e-6)
    outline = silhouette.outline(mask, width=1)
    if known is not None:
        outline &= known
        rim &= known[vi, ui]
    if not outline.any() or not rim.any():
        return np.zeros((nw, 3)), np.zeros(nw)
    _, (ri, ci) = ndimage.distance_transform_edt(~outline, return_indices=True)
    tu = ci[vi, ui] + 0.5
    tv = ri[vi, ui] + 0.5
    du, dv = tu - uv[:, 0], tv - uv[:, 1]
    dist = np.hypot(du, dv)
    rim &= dist < options.max_outline_px * max(h, w)
    z = cam[:, 2]
    # The image-plane move at the vertex's depth (skew ignored: it is zero here).
    d_cam = np.stack([du * z / k[0, 0], dv * z / k[1, 1], np.zeros(nw)], axis=1)
    d_rest = np.linalg.solve(transforms[:, :, :3], d_cam[..., None])[..., 0]
    weight = np.where(rim, options.silhouette, 0.0)
    return np.where(rim[:, None], d_rest, 0.0), weight


# -- the solve -----------------------------------------------------------------------------------

def solve(sol: Solver, targets: np.ndarray, weights: np.ndarray, options: DeformOptions) -> np.ndarray:
    """(W, 3) fine welded displacement (metres) minimising the module docstring's energy for
    fine-vertex targets (W, 3) in metres with weights (W,). Two sparse LU factorisations of the
    base mesh's system (x, and y with z: the mirror term couples a twin's x with minus x), ~10 ms
    each: conjugate gradients preconditioned by the first round's factors took as long."""
    blen = sol.body_length
    s = sol.subdivision
    w = np.asarray(weights, np.float64)
    data = (s.T @ sp.diags(w) @ s).tocsr()
    rhs = s.T @ (w[:, None] * np.asarray(targets, np.float64) / blen)
    base = (options.smooth * sol.bending + options.across * sol.across
            + options.stay * sp.identity(s.shape[1], format="csr") + data)
    mats = ((base + options.symmetry * sol.mirror_x).tocsr(), (base + options.symmetry * sol.mirror_yz).tocsr())
    d = np.zeros((s.shape[1], 3))
    # The matrices are symmetric: a minimum-degree ordering on A + A^T with symmetric pivoting
    # halves the fill and takes a third of the time of the default column ordering.
    lu = dict(permc_spec="MMD_AT_PLUS_A", options=dict(SymmetricMode=True))
    ax = spla.splu(mats[0].tocsc(), **lu)
    d[:, 0] = ax.solve(rhs[:, 0])
    ayz = spla.splu(mats[1].tocsc(), **lu)
    d[:, 1:] = ayz.solve(np.ascontiguousarray(rhs[:, 1:]))
    return (s @ d) * blen


def deform(character: CharacterMesh, template, fit, points_cam: np.ndarray | None = None,
           q: np.ndarray | None = None, point_skin_joints: np.ndarray | None = None,
           point_skin_weights: np.ndarray | None = None, point_valid: np.ndarray | None = None,
           mask: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
           options: DeformOptions | None = None, report: dict | None = None) -> CharacterMesh:
    """The character on the instance's rest shape, deformed toward the points (camera space
    points_cam with their Q and skin weights) and the mask (H, W) seen through `intrinsics`
    (3, 3); either evidence may be None. Returns the CharacterMesh with the new rest vertices
    (model space of fit.rest_skeleton); `report` (a dict) gets the solve's figures."""
    options = options or DeformOptions()
    report = {} if report is None else report
    t0 = time.perf_counter()
    levels = character.levels
    sol = solver(template, levels)
    topo, base_char = topology_and_mesh(template, levels)
    if character.num_vertices != base_char.num_vertices:
        raise DualPMError(f"deform: the character has {character.num_vertices} vertices, the template's "
                          f"{base_char.num_vertices}")
    inst = instance_rest(character, template, fit, report=report)
    nw = character.num_welded
    rest_w = np.zeros((nw, 3))
    rest_w[character.weld] = inst.vertices
    w_sj = np.zeros((nw, 4), np.int64)
    w_sw = np.zeros((nw, 4))
    w_sj[character.weld], w_sw[character.weld] = character.skin_joints, character.skin_weights
    faces = topo.fine_faces
    pt_target, pt_weight = np.zeros((nw, 3)), np.zeros(nw)
    cloud = None
    fine_can = sol.fine_canonical
    if points_cam is not None and q is not None and len(q):
        if point_skin_joints is None or point_skin_weights is None:
            raise DualPMError("deform: points need their skin joints and weights")
        pt_target, pt_weight, cloud = point_targets(sol, template, fit, points_cam, q, point_skin_joints,
                                             point_skin_weights, point_valid, options)
    # A cloud the rig fits badly (a weak prediction) says little about shape: its say shrinks
    # with the fit's median residual (exact maps ~0.02 body lengths, the shipped predictor's ~0.1).
    trust = 1.0 / (1.0 + (float(fit.residual_median) / (options.trust_residual * float(fit.body_length))) ** 4)
    report["point_trust"] = trust
    pt_weight = pt_weight * options.points * trust
    report["point_vertices"] = int(np.sum(pt_weight > 0))
    frame = None
    if mask is not None:
        if intrinsics is None:
            raise DualPMError("deform: a mask needs the intrinsics it was seen through")
        frame = mask_frame(mask, intrinsics, options.silhouette_size)
    report["silhouette"] = frame is not None
    transforms = skinning_transforms(fit, w_sj, w_sw)
    inner, outer = clearance(rest_w, faces)
    normals = vertex_normals(rest_w, faces)

    def clamp(t):
        return clamp_normal(t, normals, inner, outer, options.clearance) if options.clearance > 0 else t

    pt_target = clamp(pt_target)
    disp = solve(sol, pt_target, pt_weight, options)
    rounds = options.rounds if (frame is not None or cloud is not None) else 0
    rim_count = 0
    blen = float(fit.body_length)
    for _ in range(rounds):
        cur = rest_w + disp
        # The silhouette's and the cloud's targets are moves from the current shape: they add
        # to the current displacement.
        tw, tt = [pt_weight], [pt_weight[:, None] * pt_target]
        if frame is not None:
            cam = np.einsum("nij,nj->ni", transforms[:, :, :3], cur) + transforms[:, :, 3]
            s_target, s_weight = silhouette_targets(cam, faces, transforms, frame[0], frame[1], options, frame[2])
            rim_count = int(np.sum(s_weight > 0))
            tw.append(s_weight)
            tt.append(s_weight[:, None] * (disp + s_target))
        if cloud is not None and options.icp > 0:
            c_target, c_weight = surface_targets(cur, faces, fine_can, cloud, blen, options)
            c_weight = c_weight * trust
            tw.append(c_weight)
            tt.append(c_weight[:, None] * (disp + c_target))
        both_w = np.sum(tw, axis=0)
        tgt = clamp(np.sum(tt, axis=0) / np.maximum(both_w, 1e-12)[:, None])
        disp = solve(sol, tgt, both_w, options)
    report["rim_vertices"] = rim_count
    if options.repair_rounds > 0:
        disp, report["repair"] = untangle(rest_w, disp, faces, sol, options.repair_rounds)
    report["displacement_rms_m"] = float(np.sqrt(np.mean(np.sum(disp**2, axis=1))))
    report["seconds"] = time.perf_counter() - t0
    return inst.with_vertices((rest_w + disp)[character.weld])


def shape(fit, template, points: dict, point_skin_joints: np.ndarray, point_skin_weights: np.ndarray,
          point_matched: np.ndarray | None = None, photo_mask: np.ndarray | None = None,
          photo_intrinsics: np.ndarray | None = None, character: CharacterMesh | None = None,
          options: DeformOptions | None = None, report: dict | None = None) -> CharacterMesh:
    """The pipeline's call: the template's character deformed toward a reconstruction's cloud
    (points: extract_points' dict; its 'P_observed', else 'P', camera space) and the photo's
    mask (H, W) seen through photo_intrinsics. Rest vertices in the model space of
    fit.rest_skeleton, so the fitted pose skins them onto the photo (`posed`)."""
    character = character if character is not None else topology_and_mesh(template)[1]
    p = points.get("P_observed", points["P"])
    return deform(character, template, fit, p, points["Q"], point_skin_joints, point_skin_weights, point_matched,
                  photo_mask, photo_intrinsics, options=options, report=report)


def build(rec, character: CharacterMesh | None = None, options: DeformOptions | None = None,
          report: dict | None = None) -> CharacterMesh:
    """`shape` of a pipeline.Reconstruction."""
    return shape(rec.fit, rec.template, rec.points, rec.point_skin_joints, rec.point_skin_weights, rec.point_matched,
                 rec.photo_mask, rec.photo_intrinsics, character=character, options=options, report=report)
