"""The character in real Blender (bpy 5.0.1 in process): the .blend's surface has a UV map and a
Principled BSDF with the baked image packed in; the .glb passes Blender's glTF importer with the
texture embedded and the retargeted animation intact; --character template|points give the old
surface or none."""

import os

import numpy as np
import pytest

from . import extension_env as env

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def rec(templates_dir):
    from dualpm_addon import pipeline, template
    from training.evaluate import true_map

    from .fit_fixtures import horse_render

    s = horse_render(templates_dir, seed=3)
    pm = true_map(s)
    pm["photo_mask"] = np.asarray(s["mask"], bool)
    photo = pipeline.PhotoInput(np.asarray(s["rgb"]), np.asarray(s["mask"], bool), None, "render.png")
    return pipeline.from_pointmap(pm, photo, template=template.load_default(),
                                  settings=pipeline.Settings(confidence_threshold=-np.inf))


def _surface(col):
    return next(o for o in col.objects if o.get("dualpm_role") == "surface")


def _image_node(mat):
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    links = [lk for lk in mat.node_tree.links if lk.to_node == bsdf and lk.to_socket.name == "Base Color"]
    assert links and links[0].from_node.type == "TEX_IMAGE", "Base Color is not fed by an image"
    return links[0].from_node.image


def test_blend_and_glb_carry_the_texture_and_the_animation(rec, tmp_path):
    from operators import export, retarget, scene_build

    assert rec.character is not None and rec.summary()["character"]["texture"]["photo"] > 0.1
    bpy.ops.wm.read_homefile(use_empty=True)
    objs = scene_build.build(bpy.context, rec)
    surf = objs["surface"]
    assert surf["dualpm_look"] == "character"
    assert len(surf.data.polygons) == len(rec.character.mesh.faces)
    assert "UVMap" in surf.data.uv_layers
    image = _image_node(surf.data.materials[0])
    assert tuple(image.size) == (512, 512) and image.packed_file is not None
    # Blender stores the bottom row first: its first pixel is the atlas's bottom-left texel.
    px = np.empty(512 * 512 * 4, np.float32)
    image.pixels.foreach_get(px)
    bottom_left = rec.character.texture.image[-1, 0] / 255.0
    assert np.allclose(px[:3], bottom_left, atol=1 / 255 + 1e-6)
    assert os.path.isfile(env.QUADRUPED_BVH), f"{env.QUADRUPED_BVH} is missing: run `bash scripts/setup.sh`"
    frames = retarget.retarget_armature(bpy.context, objs["armature"], env.QUADRUPED_BVH)["frames"]
    assert frames > 1

    blend, glb = str(tmp_path / "c.blend"), str(tmp_path / "c.glb")
    bpy.ops.wm.save_as_mainfile(filepath=blend, copy=True, check_existing=False)
    export.export_collection(bpy.context, objs["collection"], glb)

    bpy.ops.wm.open_mainfile(filepath=blend)
    surf = next(o for o in bpy.data.objects if o.get("dualpm_role") == "surface")
    image = _image_node(surf.data.materials[0])
    assert image.packed_file is not None and tuple(image.size) == (512, 512)

    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and len(o.data.polygons) == len(rec.character.mesh.faces)]
    assert len(meshes) == 1, [o.name for o in bpy.data.objects]
    mesh = meshes[0]
    assert len(mesh.data.uv_layers) >= 1
    image = _image_node(mesh.data.materials[0])
    assert tuple(image.size) == (512, 512) and image.packed_file is not None  # embedded in the .glb
    px = np.empty(512 * 512 * 4, np.float32)
    image.pixels.foreach_get(px)
    atlas = px.reshape(512, 512, 4)[::-1, :, :3]
    assert np.abs(atlas - rec.character.texture.image / 255.0).mean() < 0.01  # PNG round trip
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    action = arm.animation_data.action if arm.animation_data else None
    assert action is not None and action.frame_range[1] - action.frame_range[0] >= frames - 2
    assert any(m.type == "ARMATURE" and m.object == arm for m in mesh.modifiers)


@pytest.mark.parametrize("look", ["template", "points"])
def test_the_other_looks(rec, look):
    import dataclasses

    from operators import scene_build

    other = dataclasses.replace(rec, character=None, settings=dict(rec.settings, character=look))
    bpy.ops.wm.read_homefile(use_empty=True)
    objs = scene_build.build(bpy.context, other)
    if look == "points":
        assert objs["surface"] is None and objs["points"] is not None
    else:
        surf = objs["surface"]
        assert surf["dualpm_look"] == "template" and len(surf.data.polygons) == len(rec.fit.faces)
        assert len(surf.data.materials) == len(rec.template.material_names)


def test_the_core_glb_writer_embeds_the_texture(rec, tmp_path):
    from dualpm_addon import gltf_write

    ch, fit = rec.character, rec.fit
    path = str(tmp_path / "core.glb")
    rot = np.repeat(np.asarray(fit.rotations)[None], 3, axis=0)
    rot[1, 1] = [np.cos(0.2), np.sin(0.2), 0.0, 0.0]
    gltf_write.write_glb(path, fit.rest_skeleton, rotations=rot, vertices=ch.rest_vertices, faces=ch.mesh.faces,
                         skin_joints=ch.mesh.skin_joints, skin_weights=ch.mesh.skin_weights, uv=ch.mesh.uv,
                         material=ch.material)
    with open(path, "rb") as f:
        js, blob = gltf_write.read_glb(f.read())
    prim = js["meshes"][0]["primitives"][0]
    assert prim["material"] == 0 and "TEXCOORD_0" in prim["attributes"]
    assert js["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    t = gltf_write.accessor_array(js, blob, prim["attributes"]["TEXCOORD_0"])
    assert np.allclose(t[:, 1], 1.0 - ch.mesh.uv[:, 1], atol=1e-6)  # glTF's v runs down
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    mesh = next(o for o in bpy.data.objects if o.type == "MESH")
    image = _image_node(mesh.data.materials[0])
    assert tuple(image.size) == (512, 512)
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    assert arm.animation_data is not None and arm.animation_data.action is not None


_SCRIPT_42 = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from dualpm_addon import template
from dualpm_addon.character import load_character, material
from operators import surface
m = load_character(template.load_default())
img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
mesh = surface.new_character_mesh("x", m.vertices, m.faces, m.uv, material.textured("M", img))
nodes = mesh.materials[0].node_tree.nodes
tex = next(n for n in nodes if n.type == "TEX_IMAGE")
px = np.empty(64 * 64 * 4, np.float32)
tex.image.pixels.foreach_get(px)
assert "UVMap" in mesh.uv_layers and tex.image.packed_file is not None
assert np.abs(px.reshape(64, 64, 4)[::-1, :, :3] - img / 255).max() < 1e-3
print("ok")
"""


@pytest.mark.blender42
def test_the_textured_material_in_blender_42():
    import subprocess

    python = env.blender_python("4.2")
    proc = subprocess.run([python, "-c", _SCRIPT_42, env.ROOT], capture_output=True, text=True, timeout=300,
                          cwd=env.ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_an_unknown_character_choice_exits_2(tmp_path):
    import subprocess

    proc = subprocess.run([os.path.join(env.ROOT, ".venv", "bin", "dualpm"), "reconstruct", env.CHELSEA, "--out",
                           str(tmp_path / "o"), "--character", "shiny"], capture_output=True, text=True, timeout=120,
                          cwd=env.ROOT)
    assert proc.returncode == 2 and "--character" in proc.stderr and "shiny" in proc.stderr
    assert not (tmp_path / "o").exists()
