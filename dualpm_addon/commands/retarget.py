"""`dualpm retarget BVH --rig FILE --out FILE [--map FILE] [--in-place] [--no-foot-lock]`

Carries BVH motion onto a rig: a baked template (.npz, e.g. assets/template_horse.npz or a
species from .cache/templates) or another BVH file's skeleton. Writes BVH or glTF (.glb, with
the template's skinned mesh when the rig is a template) by the output's extension. Bones are
paired automatically (bone_map.py); `--map` overrides pairs from a JSON object of target bone ->
source bone (or null). `--json` writes what was done and how long it took.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from .. import atomic, bone_map, bvh, gltf_write, retarget, template
from ..errors import DualPMError, clip


def add_arguments(parser) -> None:
    parser.add_argument("bvh", metavar="BVH", help="the motion capture file to retarget")
    parser.add_argument("--rig", required=True, metavar="FILE", help="target rig: a baked template (.npz), a `dualpm fit` result (.json) or a BVH file")
    parser.add_argument("--out", required=True, metavar="FILE", help="output: .bvh or .glb")
    parser.add_argument("--map", metavar="FILE", help="JSON bone map overriding automatic pairs: {\"TargetBone\": \"SourceBone\" or null}")
    parser.add_argument("--in-place", action="store_true", help="drop the horizontal root motion")
    parser.add_argument("--no-foot-lock", action="store_true", help="do not hold the feet during ground contacts")
    parser.add_argument("--json", metavar="FILE", help="write a summary (pairs, contacts, timings) as JSON")


def _load_rig(path: str):
    """(Skeleton, mesh dict or None) from a .npz template, a `dualpm fit` .json or a .bvh file."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        tpl = template.load(path)
        return tpl.skeleton, _mesh(tpl, tpl.vertices)
    if ext == ".json":
        return _fitted_rig(path)
    if ext == ".bvh":
        return retarget.skeleton_from_motion(bvh.read(path)), None
    raise DualPMError(f"{path}: a rig is a baked template (.npz), a `dualpm fit` result (.json) or a BVH file (.bvh)")


def _mesh(tpl, vertices) -> dict:
    return dict(vertices=vertices, faces=tpl.faces, skin_joints=tpl.skin_joints, skin_weights=tpl.skin_weights)


def _fitted_rig(path: str):
    """The instance's rest skeleton from `dualpm fit`'s NAME.json, and the default template's
    mesh carried onto it by the fitted scales."""
    from ..fitting import instance_rest_points
    from ..skeleton import Skeleton

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise DualPMError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DualPMError(f"{path}: not a readable JSON file ({e})") from None
    if isinstance(doc, dict) and doc.get("status") == "failed":
        raise DualPMError(f"{path}: this fit failed ({doc.get('error', 'no reason given')}); no skeleton to retarget onto")
    if not isinstance(doc, dict) or not isinstance(doc.get("skeleton"), dict):
        raise DualPMError(f"{path}: holds no fitted skeleton (expected the NAME.json written by `dualpm fit`)")
    sk = doc["skeleton"]
    try:
        skeleton = Skeleton(tuple(sk["joint_names"]), np.asarray(sk["parents"], np.int64),
                            np.asarray(sk["rest_heads_m"], float), np.asarray(sk["rest_tails_m"], float),
                            np.asarray(sk["rest_frames"], float))
        scale, bone_scales = float(sk["global_scale"]), np.asarray(sk["bone_scales"], float)
    except (KeyError, TypeError, ValueError) as e:
        raise DualPMError(f"{path}: the fitted skeleton is incomplete or malformed ({e})") from None
    tpl = template.load_default()
    if tuple(tpl.skeleton.joint_names) != skeleton.joint_names or bone_scales.shape != (skeleton.num_joints,):
        return skeleton, None  # fitted on another template: the skeleton alone
    rest = instance_rest_points(tpl.skeleton, tpl.vertices, tpl.skin_joints, tpl.skin_weights, scale, bone_scales,
                                instance=skeleton)
    return skeleton, _mesh(tpl, rest)


def run(args) -> int:
    out_ext = os.path.splitext(args.out)[1].lower()
    if out_ext not in (".bvh", ".glb"):
        raise DualPMError(f"{clip(args.out, 100, tail=True)}: the output must end in .bvh or .glb")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):  # before the work, not after it
        raise DualPMError(f"{clip(args.out, 100, tail=True)}: the folder {clip(out_dir, 100, tail=True)} does not exist")
    timings = {}

    def progress(msg: str):
        print(f"dualpm retarget: {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        return _run(args, out_ext, timings, progress, t0)
    except MemoryError:
        # The reader's limits keep a BVH file's own arrays bounded; this is the rest of the work.
        raise DualPMError(f"{clip(args.bvh, 100, tail=True)}: not enough memory to retarget this motion "
                          f"(try fewer frames)") from None


def _run(args, out_ext: str, timings: dict, progress, t0: float) -> int:
    # Nothing goes to stderr until the inputs are known good, so a bad file gives exactly one line.
    motion = bvh.read(args.bvh)
    motion.check_pose_memory(56, "world rotations and positions")  # what retargeting computes first
    timings["read_s"] = time.perf_counter() - t0
    skeleton, mesh = _load_rig(args.rig)
    t1 = time.perf_counter()
    source_rig, target_rig = bone_map.Rig.from_motion(motion), bone_map.Rig.from_skeleton(skeleton)
    mapping = bone_map.auto_map(source_rig, target_rig)
    if args.map:
        mapping = bone_map.apply_override(mapping, bone_map.load_override(args.map), source_rig, target_rig,
                                          origin=args.map)
    timings["map_s"] = time.perf_counter() - t1
    if not mapping.pairs:  # retarget() refuses this too; here it comes before any progress line
        raise DualPMError(f"{clip(args.bvh, 100, tail=True)}: no bone of the target rig could be paired with the "
                          f"motion's joints; give a bone map (--map)")
    progress(f"read {args.bvh} ({motion.num_joints} joints, {motion.num_frames} frames); {len(mapping.pairs)} of "
             f"{skeleton.num_joints} target bones paired; retargeting")
    t2 = time.perf_counter()
    result = retarget.retarget(motion, skeleton, mapping, in_place=args.in_place, foot_lock=not args.no_foot_lock,
                               progress=progress)
    timings["retarget_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    if out_ext == ".bvh":
        out = bvh.from_skeleton_pose(skeleton, result.rotations, result.root_translation, result.offsets,
                                     frame_time=motion.frame_time)
        bvh.write(args.out, out)
    else:
        gltf_write.write_glb(args.out, skeleton, rotations=result.rotations, root_translation=result.root_translation,
                             offsets=result.offsets, fps=motion.fps,
                             animation_name=os.path.splitext(os.path.basename(args.bvh))[0], **(mesh or {}))
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    summary = {
        "bvh": args.bvh, "rig": args.rig, "out": args.out, "frames": motion.num_frames, "fps": motion.fps,
        "source_joints": motion.num_joints, "target_joints": skeleton.num_joints,
        "paired": len(mapping.pairs), "scale": result.scale, "in_place": bool(args.in_place),
        "foot_lock": not args.no_foot_lock,
        "contact_frames": {k: int(v.sum()) for k, v in result.contacts.items()},
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "retarget_ms_per_frame": round(1000 * timings["retarget_s"] / max(motion.num_frames, 1), 4),
        "pairs": mapping.to_json(),
    }
    if args.json:
        atomic.write_json(args.json, summary, indent=2)
    progress(f"wrote {args.out} ({motion.num_frames} frames, {len(mapping.pairs)} bones paired, "
             f"{timings['total_s']:.2f} s)")
    return 0
