"""The numpy glTF writer (dualpm_addon/gltf_write.py): structure, FK from the written nodes, and
Blender's own glTF importer as the reference."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dualpm_addon import gltf_write, template
from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_to_matrix
from tests.conftest import ROOT

BLENDER_SCRIPT = r"""
import sys, numpy as np, bpy
path, out = sys.argv[1], sys.argv[2]
frames = [int(x) for x in sys.argv[3].split(",")]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=path)
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
mesh = next(o for o in bpy.context.scene.objects if o.type == "MESH")
pos, verts = [], []
for f in frames:
    bpy.context.scene.frame_set(f)  # the importer keys glTF time t at frame t * fps
    pos.append([list(arm.matrix_world @ b.head) for b in arm.pose.bones])
    ev = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    m = ev.to_mesh()
    verts.append([list(mesh.matrix_world @ v.co) for v in m.vertices])
    ev.to_mesh_clear()
np.savez(out, names=np.array([b.name for b in arm.pose.bones]), pos=np.array(pos), verts=np.array(verts))
"""


@pytest.fixture(scope="module")
def horse(templates_dir):
    return template.load(os.path.join(templates_dir, "horse.npz"))


def _node_fk(gltf, blob, frame):
    """Model-space joint heads from the written nodes at one animation key (our Z-up frame)."""
    nodes = gltf["nodes"]
    trs = {i: (np.array(n.get("translation", [0, 0, 0])), np.array(n.get("rotation", [0, 0, 0, 1])))
           for i, n in enumerate(nodes)}
    for ch in gltf["animations"][0]["channels"]:
        out = gltf_write.accessor_array(gltf, blob, gltf["animations"][0]["samplers"][ch["sampler"]]["output"])
        t, r = trs[ch["target"]["node"]]
        if ch["target"]["path"] == "rotation":
            trs[ch["target"]["node"]] = (t, out[frame].astype(np.float64))
        else:
            trs[ch["target"]["node"]] = (out[frame].astype(np.float64), r)
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    world = {}

    def get(i):
        if i not in world:
            t, r = trs[i]
            m = np.eye(4)
            m[:3, :3] = quat_to_matrix(np.array([r[3], r[0], r[1], r[2]]))
            m[:3, 3] = t
            world[i] = get(parent[i]) @ m if i in parent else m
        return world[i]

    return world, get


def test_written_nodes_reproduce_the_clip(horse):
    c = horse.clip("Walk")
    data = gltf_write.build_glb(horse.skeleton, rotations=c.rotations, root_translation=c.root_translation,
                                offsets=c.offsets, fps=c.fps, vertices=horse.vertices, faces=horse.faces,
                                skin_joints=horse.skin_joints, skin_weights=horse.skin_weights)
    assert data[:4] == b"glTF" and len(data) % 4 == 0
    gltf, blob = gltf_write.read_glb(data)
    j = horse.skeleton.num_joints
    assert gltf["asset"]["version"] == "2.0"
    assert len(gltf["nodes"]) == j + 2  # joints, the Y-up armature node, the mesh node
    assert gltf["skins"][0]["joints"] == list(range(j))
    times = gltf_write.accessor_array(gltf, blob, gltf["animations"][0]["samplers"][0]["input"])[:, 0]
    np.testing.assert_allclose(times, np.arange(c.num_frames) / c.fps, rtol=1e-6)
    ref = horse.skeleton.forward_kinematics(c.rotations, c.root_translation, offsets=c.offsets)[..., :3, 3]
    y_up_to_z_up = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    for frame in (0, 7, c.num_frames - 1):
        _, get = _node_fk(gltf, blob, frame)
        heads = np.array([get(k)[:3, 3] for k in range(j)])  # in glTF's Y-up frame
        np.testing.assert_allclose(heads @ y_up_to_z_up.T, ref[frame], atol=1e-5)
    pos = gltf_write.accessor_array(gltf, blob, gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    np.testing.assert_allclose(pos, horse.vertices, atol=1e-6)


def test_skeleton_only_and_bad_inputs(horse):
    gltf, blob = gltf_write.read_glb(gltf_write.build_glb(horse.skeleton))
    assert "animations" not in gltf and "meshes" not in gltf and blob == b""
    with pytest.raises(DualPMError, match="rotations have shape"):
        gltf_write.build_glb(horse.skeleton, rotations=np.zeros((3, 2, 4)))
    with pytest.raises(DualPMError, match="face refers to a vertex"):
        gltf_write.build_glb(horse.skeleton, vertices=np.zeros((3, 3)), faces=[[0, 1, 5]])
    with pytest.raises(DualPMError, match="not a glTF"):
        gltf_write.read_glb(b"nope")


def test_blender_imports_what_we_write(tmp_path, horse):
    """Blender's glTF importer sees the same joint heads and skinned vertices as our FK and LBS."""
    c = horse.clip("Gallop")
    path = tmp_path / "horse.glb"
    gltf_write.write_glb(path, horse.skeleton, rotations=c.rotations, root_translation=c.root_translation,
                         offsets=c.offsets, fps=c.fps, vertices=horse.vertices, faces=horse.faces,
                         skin_joints=horse.skin_joints, skin_weights=horse.skin_weights)
    script = tmp_path / "check.py"
    script.write_text(BLENDER_SCRIPT)
    out = tmp_path / "blender.npz"
    frames = [0, 5, c.num_frames - 1]
    proc = subprocess.run([sys.executable, str(script), str(path), str(out), ",".join(map(str, frames))],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = np.load(out)
    names = [str(n) for n in ref["names"]]
    idx = [horse.skeleton.index(n) for n in names]
    heads = horse.skeleton.forward_kinematics(c.rotations, c.root_translation, offsets=c.offsets)[..., :3, 3]
    verts = horse.pose_vertices(c.rotations[frames], c.root_translation[frames], c.offsets[frames])
    for k, f in enumerate(frames):
        np.testing.assert_allclose(ref["pos"][k], heads[f][idx], atol=1e-4 * horse.body_length)
        np.testing.assert_allclose(ref["verts"][k], verts[k], atol=1e-4 * horse.body_length)
