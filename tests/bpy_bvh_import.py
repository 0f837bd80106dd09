"""Blender's own BVH importer as a reference, run in a real bpy subprocess.

    python tests/bpy_bvh_import.py OUT.npz [--frames N] BVH...

For each file: imports it with io_anim_bvh with no axis conversion (axis_forward='Y',
axis_up='Z': Blender's own frame, so the identity), scale 1 and NATIVE rotations, then samples up
to N evenly spaced frames and records every pose bone's head in world space. Writes
`<i>_names`, `<i>_frames` (0-based BVH frames), `<i>_pos` (frames x bones x 3), `<i>_seconds`
(the importer's own time) and `<i>_matrix_world` for file i. Used by tests/test_bvh.py and
benchmarks/bench_bvh.py.
"""

import sys
import time

import numpy as np


def main(argv):
    import bpy

    out = argv[0]
    frames_wanted = 100
    paths = argv[1:]
    if paths[:1] == ["--frames"]:
        frames_wanted, paths = int(paths[1]), paths[2:]
    result = {}
    for i, path in enumerate(paths):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t = time.perf_counter()
        bpy.ops.import_anim.bvh(filepath=path, axis_forward="Y", axis_up="Z", global_scale=1.0,
                                rotate_mode="NATIVE", use_fps_scale=False, update_scene_fps=False,
                                update_scene_duration=False, frame_start=1)
        result[f"{i}_seconds"] = time.perf_counter() - t
        arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
        result[f"{i}_matrix_world"] = np.array([list(r) for r in arm.matrix_world])
        first, last = arm.animation_data.action.frame_range
        n = int(round(last - first)) + 1
        frames = np.unique(np.linspace(0, n - 1, min(n, frames_wanted)).round().astype(int)) if frames_wanted else []
        pos = np.zeros((len(frames), len(arm.pose.bones), 3))
        for k, f in enumerate(frames):
            bpy.context.scene.frame_set(1 + int(f))  # frame_start=1 holds the file's first frame
            for j, b in enumerate(arm.pose.bones):
                pos[k, j] = arm.matrix_world @ b.head
        result[f"{i}_names"] = np.array([b.name for b in arm.pose.bones])
        result[f"{i}_frames"] = np.asarray(frames, dtype=np.int64)
        result[f"{i}_pos"] = pos
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1:])
