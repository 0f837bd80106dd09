"""`dualpm fit MAPS.npz... --out DIR`: dual point maps to fitted skeletons (NAME.json each).

Per map: keep the points (occupancy > --occupancy and confidence >= --confidence; a map whose
confidence is the same everywhere, a ground-truth map, is kept on occupancy alone), place the
cloud so that it reprojects onto its pixels (fit_camera; --solve-focal when the map's focal
length is not to be trusted), fit the skeleton (fitting; a predicted map with the stronger pose prior
fit_skeleton.PREDICTED_POSE_WEIGHT, an exact one with FitOptions' default, unless --pose-weight)
and write NAME.json:

    map, status "ok"
    points: kept, matched_fraction (Q within reach of the template), used (by the solver)
    camera: focal_px, intrinsics, translation_m (applied to P before the fit), distance_m,
            residual_px_rms / residual_px_median (after), residual_px_before, focal_solved
    skeleton: joint_names, parents, joints_camera_m and tails_camera_m (J, 3) posed, camera space;
            rotations_wxyz (J, 4) local quaternions; root: model_to_camera (4x4, rigid),
            rotation_wxyz and translation_m (the same transform), root_translation_m (zeros:
            the root bone's own offset); rest_heads_m, rest_tails_m (J, 3) and rest_frames
            (J, 3, 3) of the instance's rest skeleton (model space, Z up, facing -Y);
            global_scale, bone_scales (J,)
    residuals: rms_m, median_m, inlier_fraction, per_bone_median_m {bone: m or null}
    flags: {bone: [no_support | weak_support | high_residual]}
    body_length_m, solver {name, nfev, converged, cost}, timings_s {stage: s}

A failing map writes {"map", "status": "failed", "error"} and the batch goes on; the exit code
is the number of maps that failed (at most 125).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..atomic import write_json
from ..batch import exit_code, output_names



def add_arguments(p) -> None:
    p.add_argument("maps", nargs="+", metavar="MAPS.npz", help="dual point maps (dualpm predict / dualpm synth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.json (created if needed)")
    p.add_argument("--occupancy", type=float, default=None, metavar="T", help="keep points with occupancy > T (0.5)")
    p.add_argument("--confidence", type=float, default=None, metavar="C",
                   help="keep points with confidence >= C (2.0; ignored for maps of uniform confidence)")
    p.add_argument("--solve-focal", action="store_true", help="solve the focal length too (unknown camera)")
    p.add_argument("--no-camera", action="store_true", help="fit P as it is, without the reprojection step")
    p.add_argument("--solver", choices=("lm", "scipy"), default="lm", help="least-squares solver")
    p.add_argument("--seed", type=int, default=0, help="seed of the point subsampling")
    p.add_argument("--pose-weight", type=float, default=None, metavar="W",
                   help="weight of the pose prior (default: 0.01 for a predicted map, 0.001 for an exact one)")


def _r(a, digits: int = 6):
    """Nested lists of rounded floats; NaN becomes null (JSON has no NaN)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return None if not np.isfinite(a) else round(float(a), digits)
    return [_r(x, digits) for x in a]


def fit_map(arrays: dict, context, options, solve_focal: bool = False, use_camera: bool = True,
            occupancy: float | None = None, confidence: float | None = None,
            pose_weight: float | None = None) -> dict:
    """Fit one validated dual point map; the JSON-ready summary (module docstring)."""
    import dataclasses

    from .. import pointmap
    from ..errors import DualPMError
    from ..fit_camera import fit_camera
    from ..fitting import PREDICTED_POSE_WEIGHT, fit
    from ..rotations import matrix_to_quat

    t0 = time.perf_counter()
    occ = pointmap.OCCUPANCY_THRESHOLD if occupancy is None else occupancy
    conf = pointmap.CONFIDENCE_THRESHOLD if confidence is None else confidence
    c = arrays["confidence"]
    exact = bool(c.size and np.all(c == c.flat[0]))
    if exact:
        conf = -np.inf  # a ground-truth map: confidence carries nothing
    if pose_weight is None and not exact:
        pose_weight = PREDICTED_POSE_WEIGHT
    if pose_weight is not None:
        options = dataclasses.replace(options, pose_weight=pose_weight)
    pts = pointmap.extract_points(arrays, occ, conf)
    n = len(pts["P"])
    if n == 0:
        raise DualPMError(f"no point passes occupancy > {occ} and confidence >= {conf}")
    p = pts["P"].astype(np.float64)
    k = np.asarray(arrays["intrinsics"], dtype=np.float64)
    timings = {"extract": time.perf_counter() - t0}
    cam = None
    if use_camera:
        uv = pts["pixel"][:, ::-1].astype(np.float64) + 0.5  # (row, col) -> pixel centre (u, v)
        cam = fit_camera(p, uv, k, solve_focal=solve_focal)
        p = cam.apply(p)
        timings["camera"] = cam.seconds
    f = fit(p, pts["Q"], context, options)
    timings.update({k_: v for k_, v in f.timings.items() if k_ != "total"})
    timings["total"] = time.perf_counter() - t0
    m = f.model_to_camera
    rs = f.rest_skeleton
    out = {
        "status": "ok",
        "points": {"kept": n, "matched_fraction": _r(f.match_fraction, 4), "used": int(f.points_used)},
        "skeleton": {
            "joint_names": list(f.joint_names),
            "parents": [int(x) for x in f.parents],
            "joints_camera_m": _r(f.joints),
            "tails_camera_m": _r(f.tails),
            "rotations_wxyz": _r(f.rotations),
            "root": {"model_to_camera": _r(m), "rotation_wxyz": _r(matrix_to_quat(m[:3, :3])),
                     "translation_m": _r(m[:3, 3])},
            "root_translation_m": _r(f.root_translation),
            "rest_heads_m": _r(rs.rest_heads),
            "rest_tails_m": _r(rs.rest_tails),
            "rest_frames": _r(rs.rest_frames),
            "global_scale": _r(f.global_scale),
            "bone_scales": _r(f.bone_scales),
        },
        "residuals": {"rms_m": _r(f.residual_rms), "median_m": _r(f.residual_median),
                      "inlier_fraction": _r(f.inlier_fraction),
                      "per_bone_median_m": {nm: _r(v) for nm, v in zip(f.joint_names, f.bone_residual)}},
        "flags": f.bone_flags(),
        "body_length_m": _r(f.body_length),
        "solver": {"name": options.solver, "nfev": int(f.nfev), "converged": bool(f.converged), "cost": _r(f.cost, 9),
                   "pose_weight": options.pose_weight},
        "timings_s": {k_: round(float(v), 5) for k_, v in timings.items()},
    }
    if cam is not None:
        out["camera"] = {"focal_px": _r(cam.focal_px), "intrinsics": _r(cam.intrinsics),
                         "translation_m": _r(cam.translation), "distance_m": _r(cam.distance),
                         "residual_px_rms": _r(cam.residual_px_rms), "residual_px_median": _r(cam.residual_px_median),
                         "residual_px_before": _r(cam.residual_px_before), "focal_solved": cam.focal_solved,
                         "focal_observable": cam.focal_observable}
    else:
        out["camera"] = {"focal_px": _r(k[0, 0]), "intrinsics": _r(k), "translation_m": [0.0, 0.0, 0.0],
                         "distance_m": _r(np.median(p[:, 2])), "focal_solved": False}
    return out


def run(args) -> int:
    from .. import pointmap
    from ..errors import DualPMError
    from ..fitting import FitOptions, prepare

    if args.pose_weight is not None and not args.pose_weight >= 0:
        raise DualPMError(f"--pose-weight {args.pose_weight}: must be 0 or more")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise DualPMError(f"--out {args.out}: cannot create ({e.strerror or e})") from None
    t0 = time.monotonic()
    context = prepare()
    options = FitOptions(solver=args.solver, seed=args.seed, point_weights=False)
    print(f"dualpm fit: {len(args.maps)} map(s), template ready in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    failed = 0
    for i, (path, name) in enumerate(zip(args.maps, output_names(args.maps, "map")), 1):
        t = time.monotonic()
        out_path = os.path.join(args.out, name + ".json")
        try:
            result = {"map": path}
            result.update(fit_map(pointmap.load(path), context, options, solve_focal=args.solve_focal,
                                  use_camera=not args.no_camera, occupancy=args.occupancy,
                                  confidence=args.confidence, pose_weight=args.pose_weight))
            flagged = len(result["flags"])
            print(f"[{i}/{len(args.maps)}] {path}: {result['points']['kept']} points, residual "
                  f"{1000 * result['residuals']['median_m']:.1f} mm, {flagged} bone(s) flagged -> {out_path} "
                  f"({time.monotonic() - t:.2f} s)", file=sys.stderr)
        except DualPMError as e:
            failed += 1
            result = {"map": path, "status": "failed", "error": str(e)}
            print(f"[{i}/{len(args.maps)}] {path}: failed: {e}", file=sys.stderr)
        write_json(out_path, result)
    print(f"dualpm fit: {len(args.maps) - failed} fitted, {failed} failed ({time.monotonic() - t0:.1f} s)",
          file=sys.stderr)
    return exit_code(failed)
