"""Blender scenarios for the extension, run as standalone scripts in a real bpy (5.0 or 4.2 LTS).

    BLENDER_USER_RESOURCES=DIR  PYTHON tests/blender_scenarios.py SCENARIO --install (dev|ZIP) --data DIR

`--install ZIP` installs and enables the built extension zip as a user would (Blender's own
extension installer); `--install dev` links this checkout into a local extension repository
(the same package layout, without building). The scenario prints one line
`SCENARIO_RESULT {json}` and exits 0, or fails with the assertion that broke. The tests in
tests/test_operators_blender.py run these with .venv's bpy 5.0.1 and .venv42's bpy 4.2; the data
directory (oracle and stand-in models, synthetic photo, quadruped BVH, damaged files) is made by
them in .venv, which has onnx and embreex.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

import bpy
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_REPO = "dualpm_dev"
ADDON = None  # the enabled add-on's module name


# -- installation ---------------------------------------------------------------------------------

def install(how: str) -> str:
    global ADDON
    if how == "dev":
        repo_dir = tempfile.mkdtemp(prefix="dualpm-devrepo-")
        os.symlink(ROOT, os.path.join(repo_dir, "dualpm"))
        r = bpy.ops.preferences.extension_repo_add(name="dev", type="LOCAL", use_custom_directory=True,
                                                   custom_directory=repo_dir)
        assert r == {"FINISHED"}, r
        module = [r.module for r in bpy.context.preferences.extensions.repos if r.directory == repo_dir][0]
        ADDON = f"bl_ext.{module}.dualpm"
        assert bpy.ops.preferences.addon_enable(module=ADDON) == {"FINISHED"}
    elif how == "preinstalled":  # installed from the zip by an earlier `--preinstall` run
        ADDON = "bl_ext.user_default.dualpm"
        assert bpy.ops.preferences.addon_enable(module=ADDON) == {"FINISHED"}
    else:
        r = bpy.ops.extensions.package_install_files(filepath=how, repo="user_default", enable_on_install=True)
        assert r == {"FINISHED"}, r
        ADDON = "bl_ext.user_default.dualpm"
    assert ADDON in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
    assert hasattr(bpy.ops.dualpm, "reconstruct")
    return ADDON


def prefs():
    return bpy.context.preferences.addons[ADDON].preferences


def addon_module(name: str):
    import importlib

    return importlib.import_module(f"{ADDON}.{name}")


# -- the user's scene -------------------------------------------------------------------------------

def _r(values, nd=6):
    return [round(float(v), nd) for v in values]


def snapshot(selection: bool = False) -> dict:
    """Everything about the scene an artist would call "my scene", keyed by datablock."""
    bpy.context.view_layer.update()
    d = {}
    for o in bpy.data.objects:
        if o.type == "ARMATURE":
            d[f"bones:{o.name}"] = {b.name: _r(list(b.head_local) + list(b.tail_local) + list(np.ravel(b.matrix_local)))
                                    for b in o.data.bones}
            d[f"pose:{o.name}"] = {b.name: _r(list(b.rotation_quaternion) + list(b.location)) for b in o.pose.bones}
        d[f"object:{o.name}"] = {
            "type": o.type, "matrix": _r(np.array(o.matrix_world).ravel()),
            "data": o.data.name if o.data else None, "parent": o.parent.name if o.parent else None,
            "collections": sorted(c.name for c in o.users_collection),
            "modifiers": [m.name for m in o.modifiers], "hide": [o.hide_viewport, o.hide_render],
            "props": sorted(o.keys()),
        }
        if selection:
            d[f"object:{o.name}"]["selected"] = o.select_get()
    for m in bpy.data.meshes:
        co = np.empty(len(m.vertices) * 3, np.float32)
        m.vertices.foreach_get("co", co)
        d[f"mesh:{m.name}"] = {"verts": len(m.vertices), "sum": round(float(np.abs(co).sum()), 4),
                               "materials": [x.name if x else None for x in m.materials]}
    for c in bpy.data.collections:
        d[f"collection:{c.name}"] = {"objects": sorted(o.name for o in c.objects),
                                     "children": sorted(x.name for x in c.children)}
    for kind in ("materials", "cameras", "lights", "images", "armatures", "actions", "node_groups"):
        for x in getattr(bpy.data, kind):
            d[f"{kind}:{x.name}"] = x.users
    for s in bpy.data.scenes:
        d[f"scene:{s.name}"] = {"frames": [s.frame_start, s.frame_end, s.frame_current],
                                "camera": s.camera.name if s.camera else None,
                                "resolution": [s.render.resolution_x, s.render.resolution_y],
                                "children": sorted(c.name for c in s.collection.children),
                                "objects": sorted(o.name for o in s.collection.objects)}
    if selection:
        d["active"] = bpy.context.view_layer.objects.active.name if bpy.context.view_layer.objects.active else None
    return d


def user_scene_untouched(before: dict, after: dict, new_collections: set) -> list[str]:
    """Keys of the user's scene that changed or vanished (the scene's list of child collections
    may only have gained the new ones; datablock user counts are not compared)."""
    bad = []
    for key, value in before.items():
        if key not in after:
            bad.append(f"removed {key}")
            continue
        a = after[key]
        if key.startswith("scene:"):
            a = dict(a, children=[c for c in a["children"] if c not in new_collections])
        if key.split(":")[0] in ("materials", "cameras", "lights", "images", "armatures", "actions", "node_groups"):
            continue
        if a != value:
            bad.append(f"changed {key}: {value} -> {a}")
    return bad


def make_user_scene():
    """A user scene with things a careless importer could touch: a selected armature in its own
    pose, an active mesh with a modifier, a custom frame range and render size."""
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end, scene.frame_current = 10, 90, 42
    scene.render.resolution_x, scene.render.resolution_y = 1234, 567
    arm = bpy.data.armatures.new("UserRig")
    obj = bpy.data.objects.new("UserRig", arm)
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    b = arm.edit_bones.new("UserBone")
    b.head, b.tail, b.roll = (0, 0, 0), (0, 0.3, 0.2), 0.7
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.pose.bones["UserBone"].rotation_quaternion = (0.9, 0.1, 0.3, 0.0)
    obj.location = (2, 3, 0)
    cube = bpy.data.objects.get("Cube")
    if cube is not None:
        cube.modifiers.new("UserBevel", "BEVEL")
        cube["user_prop"] = 1
        cube.select_set(True)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = cube or obj


# -- checks on a reconstruction --------------------------------------------------------------------

def check_collection(col, template) -> dict:
    objs = {o.get("dualpm_role"): o for o in col.objects}
    assert {"camera", "armature", "points", "surface"} <= set(objs), sorted(objs)
    cam, arm, pts, surf = objs["camera"], objs["armature"], objs["points"], objs["surface"]
    assert cam.type == "CAMERA" and cam.data.background_images and cam.data.background_images[0].image is not None
    assert arm.type == "ARMATURE"
    bones = {b.name for b in arm.data.bones}
    missing = set(template.skeleton.joint_names) - bones
    assert not missing, f"armature lacks {sorted(missing)}"
    n_points = len(pts.data.vertices)
    assert n_points >= 1000, f"only {n_points} points"
    for name in ("Q", "layer", "confidence", "colour"):
        assert name in pts.data.attributes, f"point attribute {name} missing"
    gn = [m for m in pts.modifiers if m.type == "NODES"]
    assert gn and gn[0].node_group is not None
    mesh_to_points = [n for n in gn[0].node_group.nodes if n.bl_idname == "GeometryNodeMeshToPoints"]
    assert mesh_to_points, "no Mesh to Points node"
    size_items = [i for i in gn[0].node_group.interface.items_tree if getattr(i, "in_out", "") == "INPUT"
                  and i.name == "Point Size"]
    assert size_items and gn[0][size_items[0].identifier] > 0
    for o in (pts, surf):
        mods = [m for m in o.modifiers if m.type == "ARMATURE"]
        assert mods and mods[0].object == arm, f"{o.name} is not deformed by the armature"
        assert {g.name for g in o.vertex_groups} == set(template.skeleton.joint_names)
        assert o.modifiers[0].type == "ARMATURE", "the armature must deform before the point display"
    # every vertex of the surface is weighted to some bone
    weighted = sum(1 for v in surf.data.vertices if len(v.groups))
    assert weighted == len(surf.data.vertices), f"{len(surf.data.vertices) - weighted} surface vertices unweighted"
    for o in col.objects:
        for key in ("dualpm_model_version", "dualpm_input_sha256", "dualpm_parameters"):
            assert key in o, f"{o.name} lacks provenance {key}"
        assert len(o["dualpm_input_sha256"]) == 64
        json.loads(o["dualpm_parameters"])
    return {"points": n_points, "bones": len(bones), "surface_vertices": len(surf.data.vertices),
            "model_version": arm["dualpm_model_version"]}


def evaluated_bone_names_and_range(path):
    """Import a glTF into a fresh scene: bone names of its armature, frame range of its action."""
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    arms = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(arms) == 1, [o.name for o in bpy.data.objects]
    names = sorted(b.name for b in arms[0].data.bones)
    acts = [a for a in bpy.data.actions]
    frame_range = None
    if acts:
        r = acts[0].frame_range
        frame_range = [float(r[0]), float(r[1])]
    return names, frame_range, len(acts)


# -- scenarios ---------------------------------------------------------------------------------------

def scenario_reconstruct(data: str, photos: list[str], bvh: str | None = None) -> dict:
    """End to end on each photo through the real server subprocess: the operator, the collection,
    retargeting, glTF export and re-import, the user's scene untouched, one undo."""
    p = prefs()
    p.inference = "SUBPROCESS"
    p.model_path = os.path.join(data, "oracle.onnx")
    template = addon_module("operators.session").template()
    make_user_scene()
    out = {"photos": {}}
    for photo in photos:
        before = snapshot()
        before_sel = snapshot(selection=True)
        bpy.ops.ed.undo_push(message="before DualPM")
        cols_before = set(bpy.data.collections.keys())
        t0 = time.perf_counter()
        r = bpy.ops.dualpm.reconstruct(filepath=photo)
        wall = time.perf_counter() - t0
        assert r == {"FINISHED"}, r
        bpy.ops.ed.undo_push(message="Reconstruct from Photo")  # what the UI pushes when it finishes
        new = set(bpy.data.collections.keys()) - cols_before
        assert len(new) == 1, new
        col = bpy.data.collections[new.pop()]
        info = check_collection(col, template)
        after = snapshot()
        bad = user_scene_untouched(before, after, {col.name})
        assert not bad, bad[:5]
        rec = addon_module("operators.reconstruct").last_result
        info.update(wall_s=round(wall, 3), timings={k: round(v, 4) for k, v in rec.timings.items()})

        # one undo: back to the state before the click (selection included)
        col_name = col.name
        bpy.ops.ed.undo()
        undone = snapshot(selection=True)
        diff = [k for k in set(undone) | set(before_sel) if undone.get(k) != before_sel.get(k)]
        assert not diff, f"undo left differences: {diff[:5]}"
        bpy.ops.ed.redo()
        col = bpy.data.collections[col_name]
        arm = [o for o in col.objects if o.get("dualpm_role") == "armature"][0]

        if bvh:
            info["retarget"] = retarget_and_check(arm, bvh)
        glb = os.path.join(tempfile.mkdtemp(prefix="dualpm-export-"), "result.glb")
        before_export = snapshot(selection=True)
        export = addon_module("operators.export")
        export.export_collection(bpy.context, col, glb)
        assert snapshot(selection=True) == before_export, "export changed the scene"
        info["glb_bytes"] = os.path.getsize(glb)
        out["photos"][os.path.basename(photo)] = info
        bones_before = sorted(b.name for b in arm.data.bones)
        action = arm.animation_data.action if arm.animation_data else None
        expect_range = [float(action.frame_range[0]), float(action.frame_range[1])] if action else None
        saved = bpy.data.filepath
        state = os.path.join(tempfile.mkdtemp(prefix="dualpm-state-"), "state.blend")
        bpy.ops.wm.save_as_mainfile(filepath=state, copy=True)
        names, frame_range, n_actions = evaluated_bone_names_and_range(glb)
        assert names == bones_before, (set(names) ^ set(bones_before))
        if expect_range:
            assert frame_range == expect_range, (frame_range, expect_range)
        info["reimport"] = {"bones": len(names), "frame_range": frame_range, "actions": n_actions}
        bpy.ops.wm.open_mainfile(filepath=state)
        del saved
    return out


def retarget_and_check(arm, bvh: str) -> dict:
    s = bpy.context.scene.dualpm
    s.bvh_path = bvh
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    arm.select_set(True)
    bpy.context.view_layer.objects.active = arm
    assert bpy.ops.dualpm.map_bones() == {"FINISHED"}
    assert len(s.bone_map) > 0 and any(p.source for p in s.bone_map)
    mapped = sum(1 for p in s.bone_map if p.source)
    s.frame_start = 1
    assert bpy.ops.dualpm.retarget() == {"FINISHED"}
    action = arm.animation_data.action
    motion = addon_module("dualpm_addon.bvh").read(bvh)
    anim = addon_module("operators.animation")
    fcurves = anim.action_fcurves(action, arm)
    assert fcurves, "no F-curves"
    counts = {len(fc.keyframe_points) for fc in fcurves}
    assert counts == {motion.num_frames}, (counts, motion.num_frames)
    frames = sorted({kp.co[0] for kp in fcurves[0].keyframe_points})
    assert frames == [float(1 + i) for i in range(motion.num_frames)], frames[:5]
    # The artist edits the list: a cleared row leaves that bone at rest under its parent...
    row = next(r for r in s.bone_map if r.target.startswith(("Tail", "Ear")) and r.source)
    cleared = row.target
    row.source = ""
    assert bpy.ops.dualpm.retarget() == {"FINISHED"}
    action = arm.animation_data.action
    tail = [fc for fc in anim.action_fcurves(action, arm)
            if fc.data_path == f'pose.bones["{cleared}"].rotation_quaternion']
    assert len(tail) == 4
    for fc in tail:
        values = np.array([kp.co[1] for kp in fc.keyframe_points])
        assert np.allclose(values, 1.0 if fc.array_index == 0 else 0.0, atol=1e-6), (fc.array_index, values[:3])
    # ...and a joint the BVH does not have is a one-line error, as is a missing file.
    row.source = "NoSuchJoint"
    errors = []
    for bad in ("list", "file"):
        if bad == "file":
            row.source = ""
            s.bvh_path = bvh + ".missing"
        try:
            bpy.ops.dualpm.retarget()
            errors.append(None)
        except RuntimeError as e:
            errors.append(str(e).strip())
    s.bvh_path = bvh
    assert errors[0] and "NoSuchJoint" in errors[0] and "\n" not in errors[0], errors
    assert errors[1] and "no such file" in errors[1], errors
    return {"frames": motion.num_frames, "fcurves": len(fcurves), "mapped": mapped,
            "slotted": anim.is_slotted(action), "errors": errors}


def scenario_errors(data: str) -> dict:
    """Each failure is one line in the operator's report, leaves no datablock behind, and comes
    back promptly."""
    p = prefs()
    p.model_path = os.path.join(data, "standin.onnx")
    cases = {
        "missing_file": ("SUBPROCESS", os.path.join(data, "does_not_exist.jpg")),
        "unreadable_image": ("SUBPROCESS", os.path.join(data, "damaged.png")),
        "no_animal": ("SUBPROCESS", os.path.join(data, "blank.png")),
        "server_will_not_start": ("PYTHON", os.path.join(data, "blank.png")),
    }
    p.python_path = os.path.join(data, "broken_python.sh")
    out = {}
    for name, (mode, photo) in cases.items():
        p.inference = mode
        before = snapshot(selection=True)
        t0 = time.perf_counter()
        try:
            r = bpy.ops.dualpm.reconstruct(filepath=photo)
            message = None
        except RuntimeError as e:  # an ERROR report reaches a Python caller as RuntimeError
            r, message = "error", str(e).strip()
        wall = time.perf_counter() - t0
        assert message is not None, f"{name}: no error reported ({r})"
        assert "\n" not in message and "Traceback" not in message, message
        assert message.startswith("Error: "), message
        after = snapshot(selection=True)
        diff = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
        assert not diff, f"{name} left {diff[:5]}"
        assert wall < 60, f"{name} took {wall:.1f} s"
        out[name] = {"message": message[len("Error: "):], "seconds": round(wall, 3)}
    # An import that fails half-way (here: a surface with an impossible face) takes back what it
    # had made: a failed operator pushes no undo step that could.
    pipeline = addon_module("dualpm_addon.pipeline")
    pm = addon_module("dualpm_addon.pointmap").load(os.path.join(data, "synthetic_map.npz"))
    rec = pipeline.from_pointmap(pm, pipeline.PhotoInput(pm["rgb"], None, 50.0, "synthetic.png"),
                                 template=addon_module("operators.session").template())
    rec.fit.faces = np.array([[0, 1, 10 ** 8]])
    if getattr(rec, "character", None) is not None:  # the surface built is the character's mesh
        import dataclasses

        rec.character.mesh = dataclasses.replace(rec.character.mesh, faces=np.array([[0, 1, 10 ** 8]]))
    before = snapshot()
    try:
        addon_module("operators.scene_build").build(bpy.context, rec)
        raise AssertionError("a broken surface was imported")
    except (TypeError, ValueError, RuntimeError, IndexError) as e:
        out["import_failure"] = {"error": type(e).__name__}
    after = snapshot()
    diff = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
    assert not diff, f"a failed import left {diff[:5]}"
    assert "no such file" in out["missing_file"]["message"]
    assert "not an image" in out["unreadable_image"]["message"]
    assert "no animal found" in out["no_animal"]["message"]
    assert "server" in out["server_will_not_start"]["message"]
    return out


def scenario_modal(data: str) -> dict:
    """The modal operator's steps (operators/reconstruct.ModalRun), ticked as its 0.1 s timer
    would: every tick returns at once while the worker runs, the status and progress follow the
    stages, the scene is written in the last tick only; and a second run cancelled midway leaves
    nothing behind."""
    p = prefs()
    p.inference = "SUBPROCESS"
    p.model_path = os.path.join(data, "oracle.onnx")
    rec_mod = addon_module("operators.reconstruct")
    wm = bpy.context.window_manager
    before = snapshot(selection=True)
    run = rec_mod.ModalRun(bpy.context, os.path.join(data, "synthetic.png"))
    run.start(bpy.context)
    assert wm.dualpm_status.running and not bpy.ops.dualpm.reconstruct.poll(), "a second click must wait"
    ticks, worst, seen, progress = 0, 0.0, [], []
    cols = set(bpy.data.collections.keys())
    t_start = time.perf_counter()
    while True:
        t = time.perf_counter()
        state = run.tick(bpy.context)
        dt = time.perf_counter() - t
        ticks += 1
        if state == "FINISHED":
            last_tick = dt
            break
        worst = max(worst, dt)
        seen.append(wm.dualpm_status.stage)
        progress.append(wm.dualpm_status.progress)
        assert set(bpy.data.collections.keys()) == cols, "the scene changed before the last tick"
        assert time.perf_counter() - t_start < 120, "the worker never finished"
        time.sleep(0.1)
    assert worst < 0.05, f"a tick took {worst:.3f} s: the UI would stall"
    assert progress == sorted(progress), "progress went backwards"
    assert not wm.dualpm_status.running and bpy.ops.dualpm.reconstruct.poll()
    new = set(bpy.data.collections.keys()) - cols
    assert len(new) == 1
    info = check_collection(bpy.data.collections[new.pop()], addon_module("operators.session").template())

    # cancelled midway: nothing stays (the photo's image datablock included)
    p.model_path = os.path.join(data, "slow.onnx")
    after_first = snapshot(selection=True)
    run2 = rec_mod.ModalRun(bpy.context, os.path.join(data, "blank.png"))
    run2.start(bpy.context)
    for _ in range(10):
        assert run2.tick(bpy.context) == "RUNNING"
        time.sleep(0.1)
    t = time.perf_counter()
    run2.cancel(bpy.context)
    cancel_s = time.perf_counter() - t
    assert run2.job.wait(1.0), "the request in flight was not aborted within 1 s"
    ended_s = time.perf_counter() - t
    assert type(run2.job.error).__name__ in ("InferenceCancelled", "Cancelled"), repr(run2.job.error)
    left = [k for k in set(after_first) | set(snapshot(selection=True))
            if after_first.get(k) != snapshot(selection=True).get(k)]
    assert not left, f"a cancelled run left {left[:5]}"
    assert not wm.dualpm_status.running and bpy.ops.dualpm.reconstruct.poll()
    del before
    return {"ticks": ticks, "worst_tick_s": worst, "last_tick_s": last_tick, "stages": sorted(set(seen)),
            "points": info["points"], "cancel_call_s": cancel_s,
            "cancel_to_end_s": ended_s, "cancel_error": type(run2.job.error).__name__}


def _synthetic_reconstruction(data: str):
    """A reconstruction straight from the exact synthetic map (no inference): its crop is the whole
    photo and its P lies on the photo's pixel rays, so the camera can be checked exactly."""
    pipeline = addon_module("dualpm_addon.pipeline")
    pm = addon_module("dualpm_addon.pointmap").load(os.path.join(data, "synthetic_map.npz"))
    path = os.path.join(data, "synthetic.png")
    photo = pipeline.PhotoInput(rgb=pm["rgb"], mask=None, focal_mm=50.0, source="synthetic.png", path=path,
                                sha256=pipeline.sha256_file(path))
    rec = pipeline.from_pointmap(pm, photo, template=addon_module("operators.session").template())
    image, _ = addon_module("operators.image_load").load(path)
    objects = addon_module("operators.scene_build").build(bpy.context, rec, image=image, set_render_resolution=True)
    return rec, objects


def scenario_camera(data: str) -> dict:
    """Blender's camera sees the points where the photo's OpenCV camera does (the one conversion
    in operators/camera_frame.py), and the skinned point cloud sits on the predicted P."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    rec, objects = _synthetic_reconstruction(data)
    scene = bpy.context.scene
    pts, cam = objects["points"], objects["camera"]
    pts.modifiers["DualPM Points"].show_viewport = False
    world = addon_module("operators.rig").evaluated_positions(bpy.context, pts)
    frame = addon_module("operators.camera_frame")
    expect_world = frame.opencv_points_to_world(rec.points["P"], frame.world_from_opencv(rec.fit.model_to_camera))
    skin_err = float(np.abs(world - expect_world).max())
    assert skin_err < 1e-3, f"skinned points are {skin_err} m off P"
    h, w = rec.photo_size
    pick = np.linspace(0, len(world) - 1, 400).astype(int)
    uv = []
    for i in pick:
        c = world_to_camera_view(scene, cam, Vector(world[i].tolist()))
        uv.append((c.x * w, (1.0 - c.y) * h))
    uv = np.array(uv)
    cv = addon_module("dualpm_addon.camera").project(rec.points["P"][pick], rec.photo_intrinsics)
    proj_err = float(np.abs(uv - cv).max())
    assert proj_err < 0.05, f"Blender's camera projects {proj_err} px away from the OpenCV camera"
    layer0 = rec.points["layer"][pick] == 0
    centres = rec.points["pixel"][pick][:, ::-1] + 0.5  # (row, col) on the grid = the photo here
    pix_err = float(np.abs(uv[layer0] - centres[layer0]).max())
    assert pix_err < 0.05, f"layer-0 points land {pix_err} px from their pixel centres"
    return {"skin_error_m": skin_err, "projection_error_px": proj_err, "pixel_error_px": pix_err,
            "points": int(len(world)), "lens_mm": cam.data.lens}


def scenario_retarget(data: str, bvh: str) -> dict:
    """Retarget a quadruped BVH onto a reconstruction: a key per frame, on 4.2 and on 5.0's slotted
    actions; the glTF export re-imports with the same bones and frame range."""
    rec, objects = _synthetic_reconstruction(data)
    arm = objects["armature"]
    info = retarget_and_check(arm, bvh)
    col = objects["collection"]
    glb = os.path.join(tempfile.mkdtemp(prefix="dualpm-export-"), "animated.glb")
    addon_module("operators.export").export_collection(bpy.context, col, glb)
    bones = sorted(b.name for b in arm.data.bones)
    r = arm.animation_data.action.frame_range
    expect = [float(r[0]), float(r[1])]
    names, frame_range, n_actions = evaluated_bone_names_and_range(glb)
    assert names == bones, set(names) ^ set(bones)
    assert n_actions >= 1 and frame_range == expect, (frame_range, expect)
    info["reimport"] = {"bones": len(names), "frame_range": frame_range}
    return info


def scenario_headless(data: str, argv: list[str]) -> dict:
    """What `blender -b --python-expr "import ...headless as h; sys.exit(h.main([...]))"` runs,
    through the installed extension's own package."""
    code = addon_module("operators.headless").main(argv)
    out = argv[argv.index("--out") + 1]
    return {"exit_code": code, "files": sorted(os.listdir(out))}


SCENARIOS = {"modal": scenario_modal, "headless": scenario_headless, "reconstruct": scenario_reconstruct, "errors": scenario_errors, "camera": scenario_camera, "retarget": scenario_retarget}


def main(argv=None) -> int:
    if "--" in sys.argv:
        argv = sys.argv[sys.argv.index("--") + 1:]
    if (argv or sys.argv[1:])[:1] == ["--preinstall"]:  # install the zip once for later runs
        zip_path = (argv or sys.argv[1:])[1]
        addon = install(zip_path)
        site = [p for p in sys.path if os.path.join("extensions", ".local") in p]
        print("SCENARIO_RESULT " + json.dumps({"addon": addon, "wheel_dirs": site,
                                               "wheels": sorted(os.listdir(site[0])) if site else []}))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--install", default="dev")
    ap.add_argument("--data", required=True)
    ap.add_argument("--photo", action="append", default=[])
    ap.add_argument("--bvh", default=None)
    ap.add_argument("--argv", default="[]", help="headless: the batch command's arguments as JSON")
    args = ap.parse_args(argv)
    install(args.install)
    kwargs = {"data": args.data}
    if args.scenario == "reconstruct":
        kwargs.update(photos=args.photo, bvh=args.bvh)
    if args.scenario == "retarget":
        kwargs.update(bvh=args.bvh)
    if args.scenario == "headless":
        kwargs.update(argv=json.loads(args.argv))
    try:
        result = SCENARIOS[args.scenario](**kwargs)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        addon_module("operators.session").shutdown()
    result["blender"] = bpy.app.version_string
    print("SCENARIO_RESULT " + json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # bpy 4.2's module segfaults at interpreter exit once its glTF exporter has run (a plain
    # `bpy.ops.export_scene.gltf()` on the default scene does it too); the result is printed and
    # flushed, so leave without the interpreter's teardown.
    os._exit(code)
