"""A Reconstruction (dualpm_addon.pipeline) into the scene, in a NEW collection.

The collection holds: the camera with the photo's intrinsics and the photo as its background;
the fitted armature in the photo's pose; the amodal point cloud (a mesh of vertices with the Q,
layer, confidence, colour and matched attributes, displayed through Geometry Nodes) and the
surface mesh, both skinned to the armature. Only new datablocks are created: nothing the user
had is changed, except that the new armature becomes the selected, active object (as importers
do).
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from mathutils import Matrix

from . import camera_frame, points, provenance, rig, surface
from ._core import core

COLLECTION_PREFIX = "DualPM"


def _matrix(m) -> Matrix:
    return Matrix([list(map(float, row)) for row in np.asarray(m)])


def new_collection(context, name: str):
    col = bpy.data.collections.new(name)
    context.scene.collection.children.link(col)
    col["dualpm_role"] = "reconstruction"
    return col


def add_camera(name: str, collection, k: np.ndarray, width: int, height: int, world_from_cv: np.ndarray,
               image=None):
    cam = bpy.data.cameras.new(name)
    for key, value in camera_frame.camera_settings(k, width, height).items():
        setattr(cam, key, value)
    cam.clip_start = 0.01
    cam.clip_end = 1000.0
    if image is not None:
        cam.show_background_images = True
        bg = cam.background_images.new()
        bg.image = image
        bg.frame_method = "FIT"
        bg.alpha = 1.0
        bg.display_depth = "BACK"
    obj = bpy.data.objects.new(name, cam)
    obj.matrix_world = _matrix(camera_frame.camera_matrix_world(world_from_cv))
    collection.objects.link(obj)
    return obj


_KINDS = ("objects", "meshes", "armatures", "cameras", "materials", "images", "node_groups", "collections")


def build(context, rec, image=None, name: str | None = None, point_size: float = points.DEFAULT_POINT_SIZE,
          set_render_resolution: bool = False, display: tuple | None = None) -> dict:
    """Create the collection and its objects; returns {"collection", "camera", "armature",
    "points", "surface"}. `set_render_resolution` (headless files only) makes the scene's render
    size the photo's, so the camera view matches the photo exactly. `display` (factor, (H, W)):
    the photo the camera is made for, when the reconstruction's was it shrunk by an integer factor
    (dualpm_addon/intake.py: a large photo is worked on at most 2048 pixels a side).

    All or nothing: if anything fails half-way, every datablock made so far is removed again
    before the error goes on (a cancelled operator pushes no undo step to take them away)."""
    before = {kind: set(getattr(bpy.data, kind)) for kind in _KINDS}
    try:
        return _build(context, rec, image, name, point_size, set_render_resolution, display)
    except BaseException:
        if context.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        for kind in _KINDS:  # objects first: they use the data below them
            coll = getattr(bpy.data, kind)
            for block in [b for b in coll if b not in before[kind]]:
                coll.remove(block)
        raise


def _build(context, rec, image, name, point_size, set_render_resolution, display=None) -> dict:
    fit = rec.fit
    stem = name or os.path.splitext(rec.source)[0] or "photo"
    prov = rec.provenance()
    h, w = rec.photo_size
    k = rec.photo_intrinsics
    if display is not None and int(display[0]) > 1:
        factor, (h, w) = int(display[0]), display[1]
        k = core("intake").scale_intrinsics(k, factor)
    world_from_cv = camera_frame.world_from_opencv(fit.model_to_camera)

    col = new_collection(context, f"{COLLECTION_PREFIX} {stem}")
    cam = add_camera(f"{stem} Camera", col, k, w, h, world_from_cv, image)
    provenance.tag(cam, prov, "camera")

    arm = rig.new_armature(context, f"{stem} Rig", fit.rest_skeleton, col)
    rig.set_pose(arm, fit.rest_skeleton, fit.rotations, fit.root_translation)
    provenance.tag(arm, prov, "armature")
    arm.data["dualpm_bone_flags"] = [int(f) for f in np.asarray(fit.flags)]

    pts = rec.points
    pmesh = points.new_point_mesh(f"{stem} Points", rec.point_rest, q=pts["Q"], layer=pts["layer"],
                                  confidence=pts["confidence"], colour=pts.get("colour"))
    pmesh.attributes.new("matched", "BOOLEAN", "POINT").data.foreach_set("value", rec.point_matched)
    pobj = bpy.data.objects.new(f"{stem} Points", pmesh)
    col.objects.link(pobj)
    rig.assign_skin(pobj, fit.joint_names, rec.point_skin_joints, rec.point_skin_weights)
    rig.bind_to_armature(pobj, arm)
    mat = points.point_material(f"{stem} Points")
    pmesh.materials.append(mat)
    points.add_point_display(pobj, points.point_display_group(mat), point_size)
    provenance.tag(pobj, prov, "points")

    sobj = _surface(rec, stem, col, arm, prov)

    if set_render_resolution:
        context.scene.render.resolution_x = int(w)
        context.scene.render.resolution_y = int(h)
        context.scene.render.resolution_percentage = 100
        context.scene.camera = cam
    arm.select_set(True)
    context.view_layer.objects.active = arm
    return {"collection": col, "camera": cam, "armature": arm, "points": pobj, "surface": sobj}


def _surface(rec, stem: str, col, arm, prov):
    """The surface the look asks for (Settings.character): the character (its UV map and baked
    photo), the template's flat-coloured mesh, or none ("points": the cloud alone)."""
    fit, look = rec.fit, rec.settings.get("character", "template")
    character = getattr(rec, "character", None)
    if look == "points":
        return None
    if character is not None:
        m = character.mesh
        smesh = surface.new_character_mesh(f"{stem} Surface", m.vertices, m.faces, m.uv, character.material)
        joints, weights = m.skin_joints, m.skin_weights
    else:
        tpl = rec.template
        smesh = surface.new_surface_mesh(f"{stem} Surface", fit.rest_vertices, fit.faces, tpl.face_material,
                                         tpl.material_names, tpl.material_colors)
        joints, weights = fit.skin_joints, fit.skin_weights
    sobj = bpy.data.objects.new(f"{stem} Surface", smesh)
    col.objects.link(sobj)
    rig.assign_skin(sobj, fit.joint_names, joints, weights)
    rig.bind_to_armature(sobj, arm)
    provenance.tag(sobj, prov, "surface")
    sobj["dualpm_look"] = "character" if character is not None else "template"
    return sobj


def reconstruction_of(obj):
    """The DualPM collection an object belongs to (or None)."""
    if obj is None:
        return None
    for col in obj.users_collection:
        if col.get("dualpm_role") == "reconstruction":
            return col
    return None


def armature_of(col):
    return next((o for o in col.objects if provenance.role(o) == "armature" and o.type == "ARMATURE"), None)
