"""Exact multi-hit ray casting and the enter/exit rule (training/raycast.py)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from dualpm_addon import camera, template
from dualpm_addon.errors import DualPMError
from training import poses, raycast


def _cast(mesh: trimesh.Trimesh, origins, directions, layers=4):
    topo = raycast.topology(mesh.vertices, mesh.faces)
    welded = topo.weld(mesh.vertices)
    hits = raycast.cast(welded, topo.faces, np.asarray(directions, float), layers,
                        origins=np.asarray(origins, float), neighbours=topo.neighbours)
    return hits, topo


def _alternates(hits) -> bool:
    occ = hits.occupied
    contiguous = np.all(occ[:-1] | ~occ[1:], axis=0)  # no empty layer before a full one
    parity = np.all((hits.front == (np.arange(len(occ)) % 2 == 0)[:, None]) | ~occ)
    t = np.where(occ, hits.t, 1e30)
    ordered = np.all((np.diff(t, axis=0) > 0) | ~occ[1:])
    return bool(np.all(contiguous) and parity and ordered)


def test_sphere_gives_entry_then_exit_on_the_ray():
    s = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    rng = np.random.default_rng(0)
    target = rng.uniform(-0.6, 0.6, (200, 3))
    origin = np.array([0.3, -0.2, -5.0])
    hits, _ = _cast(s, origin, target - origin)
    occ = hits.occupied
    assert np.all(occ[0]) and np.all(occ[1]) and not np.any(occ[2:])
    assert np.all(hits.front[0]) and not np.any(hits.front[1]) and np.all(hits.facing[0] == hits.front[0])
    d = target - origin
    p = origin + hits.t[..., None] * d
    # Both points lie on the (polygonal) sphere and on the ray.
    assert np.all(np.abs(np.linalg.norm(p[:2], axis=-1) - 1.0) < 0.02)
    assert _alternates(hits)


def test_layers_match_trimesh_all_hits_on_disjoint_bodies():
    # Three spheres in a row: every ray through all three crosses the surface six times.
    parts = [trimesh.creation.icosphere(subdivisions=2, radius=0.5).apply_translation([0, 0, z]) for z in (0, 2, 4)]
    mesh = trimesh.util.concatenate(parts)
    rng = np.random.default_rng(1)
    origins = np.column_stack([rng.uniform(-0.2, 0.2, (50, 2)), np.full(50, -3.0)])
    dirs = np.tile([0.0, 0.0, 1.0], (50, 1)) + rng.normal(0, 0.01, (50, 3))
    hits, _ = _cast(mesh, origins, dirs, layers=6)
    loc, ray, _ = mesh.ray.intersects_location(origins, dirs, multiple_hits=True)
    for i in range(50):
        ref = np.sort(np.linalg.norm(loc[ray == i] - origins[i], axis=1) / np.linalg.norm(dirs[i]))
        ours = hits.t[hits.occupied[:, i], i]
        assert len(ours) == len(ref) == 6
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert _alternates(hits)
    # Fewer layers than crossings: the nearest ones, in order.
    few, _ = _cast(mesh, origins, dirs, layers=2)
    np.testing.assert_allclose(few.t, hits.t[:2])


def test_overlapping_parts_keep_only_the_union_boundary():
    a = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    b = trimesh.creation.icosphere(subdivisions=3, radius=1.0).apply_translation([0, 0, 1.0])
    mesh = trimesh.util.concatenate([a, b])
    origins = np.tile([0.05, 0.02, -4.0], (1, 1))
    hits, _ = _cast(mesh, origins, [[0, 0, 1.0]])
    occ = hits.occupied[:, 0]
    assert occ.tolist() == [True, True, False, False]
    np.testing.assert_allclose(origins[0, 2] + hits.t[:2, 0], [-1.0, 2.0], atol=0.01)  # union: -1 .. 2
    assert hits.internal == 2  # b's entry inside a, a's exit inside b


def test_open_part_is_capped_and_sheets_are_removed():
    # An open hemisphere cup: topology caps its rim, so a ray through it enters and exits.
    s = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    keep = s.triangles_center[:, 2] < 0
    cup = trimesh.Trimesh(s.vertices, s.faces[keep], process=False)
    topo = raycast.topology(cup.vertices, cup.faces)
    assert len(topo.cap_matrix) == 1 and topo.is_cap.sum() > 0
    closed = trimesh.Trimesh(topo.weld(cup.vertices), topo.faces, process=False)
    assert closed.is_watertight and closed.is_winding_consistent and closed.volume > 0
    hits = raycast.cast(topo.weld(cup.vertices), topo.faces, [[0, 0, 1.0], [0, 0, -1.0]], 4,
                        origins=[[0.1, 0, -3], [0.1, 0, 3]], neighbours=topo.neighbours)
    assert hits.occupied[:2].all() and not hits.occupied[2:].any() and _alternates(hits)
    # A double-sided sheet (a triangle and its reversed twin) encloses nothing and is removed.
    tri = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0.0]])
    sheet = trimesh.Trimesh(np.vstack([s.vertices, tri]),
                            np.vstack([s.faces, [[len(s.vertices), len(s.vertices) + 1, len(s.vertices) + 2],
                                                 [len(s.vertices), len(s.vertices) + 2, len(s.vertices) + 1]]]),
                            process=False)
    topo = raycast.topology(sheet.vertices, sheet.faces)
    assert topo.removed_sheets == 2 and len(topo.faces) == len(s.faces)


def test_coincident_hits_on_a_shared_edge_count_once_and_a_graze_is_a_touch():
    box = trimesh.creation.box(extents=(2, 2, 2))  # each side is two triangles sharing a diagonal
    topo = raycast.topology(box.vertices, box.faces)
    welded = topo.weld(box.vertices)
    bottom = np.flatnonzero(np.all(np.isclose(box.vertices[box.faces][:, :, 2], -1), axis=1))
    shared = sorted(set(box.faces[bottom[0]]) & set(box.faces[bottom[1]]))
    a, b = box.vertices[shared]
    # Rays straight up through points of that diagonal: each meets both triangles at one t.
    points = a + np.array([0.25, 0.5, 0.7])[:, None] * (b - a)
    origins = points - [0, 0, 4.0]
    hits = raycast.cast(welded, topo.faces, [[0, 0, 1.0]] * 3, 4, origins=origins, neighbours=topo.neighbours)
    assert np.all(hits.occupied[:2]) and not np.any(hits.occupied[2:])
    np.testing.assert_allclose(origins[:, 2, None] + hits.t[:2].T, [[-1, 1]] * 3, atol=1e-12)
    assert _alternates(hits)
    # A ray that meets a tetrahedron only at a point of one of its edges is a touch, no layer.
    tetra = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]],
                            [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert tetra.volume > 0
    topo = raycast.topology(tetra.vertices, tetra.faces)
    # The edge from (1,0,0) to (0,1,0) between faces z=0 and x+y+z=1; a ray through its midpoint
    # along the edge's outward bisector plane, perpendicular to the edge, stays outside.
    mid = np.array([0.5, 0.5, 0.0])
    n1, n2 = np.array([0, 0, -1.0]), np.array([1, 1, 1.0]) / np.sqrt(3)
    along = np.cross(n1 + n2, np.array([1, -1, 0.0]))
    hits = raycast.cast(topo.weld(tetra.vertices), topo.faces, [along], 2, origins=[mid - 3 * along],
                        neighbours=topo.neighbours)
    assert not hits.occupied.any() and hits.touches == 1


def test_inside_out_pocket_is_solid_too():
    s = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    inverted = trimesh.Trimesh(s.vertices, s.faces[:, ::-1], process=False)
    hits, _ = _cast(inverted, [[0.1, 0.0, -4.0]], [[0, 0, 1.0]])
    assert hits.occupied[:2, 0].all()
    assert hits.front[0, 0] and not hits.facing[0, 0]  # an entry through a back face
    assert not hits.front[1, 0] and hits.facing[1, 0]


def test_bad_input_is_one_line():
    with pytest.raises(DualPMError, match="expected"):
        raycast.topology(np.zeros((3, 2)), np.zeros((1, 3), int))
    with pytest.raises(DualPMError, match="does not exist"):
        raycast.topology(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    s = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(DualPMError, match="layers"):
        raycast.cast(s.vertices, s.faces, [[0, 0, 1.0]], 0)


def test_every_template_is_closed_and_outward(templates_dir):
    import glob
    import os

    for path in sorted(glob.glob(os.path.join(templates_dir, "*.npz"))):
        t = template.load(path)
        topo = raycast.topology(t.vertices, t.faces)
        m = trimesh.Trimesh(topo.weld(t.vertices), topo.faces, process=False)
        assert m.is_winding_consistent, t.species
        assert m.volume > 0, t.species
        edges = np.sort(m.edges, axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert np.all(counts >= 2), f"{t.species}: boundary edges left after capping"


@pytest.fixture(scope="module")
def posed_maps(horse):
    t = horse
    topo = raycast.topology(t.vertices, t.faces)
    pose = poses.clip_pose(t, "Gallop", 5)
    v = t.pose_vertices(pose.rotations, pose.root_translation, pose.offsets)
    w2c = camera.look_at([2.5, -3.0, 1.6], [0.0, 0.0, 0.9])
    vc = v @ w2c[:3, :3].T + w2c[:3, 3]
    k = camera.intrinsics_from_focal_mm(45, 96, 128)
    out = raycast.point_maps(vc, topo.extend(t.canonical_vertices), topo, k, 128, 96, 4)
    return dict(out=out, topo=topo, vc=vc, k=k, t=t)


def test_template_maps_reproject_order_and_alternate(posed_maps):
    out, k = posed_maps["out"], posed_maps["k"]
    occ = out["occupancy"] > 0
    assert occ[0].sum() > 500 and occ[1].sum() == occ[0].sum() and occ[2].any()
    uv = camera.project(out["P"][occ].astype(np.float64), k)
    centres = camera.pixel_centers(128, 96)[np.nonzero(occ)[1:]]
    assert np.abs(uv - centres).max() <= 1e-3
    assert _alternates(out["hits"])
    np.testing.assert_array_equal(out["hits"].occupied.reshape(occ.shape), occ)
    # The synthesizer's compact path casts only the mesh's box and gives the same maps.
    t, topo = posed_maps["t"], posed_maps["topo"]
    small = raycast.point_maps(posed_maps["vc"], topo.extend(t.canonical_vertices), topo, k, 128, 96, 4, compact=True)
    assert len(small["pixels"]) < 128 * 96
    for name in ("P", "Q", "occupancy"):
        np.testing.assert_array_equal(small[name], out[name])
    z = np.where(occ, out["P"][..., 2], 1e30)
    assert np.all((np.diff(z, axis=0) > 0) | ~occ[1:])
    assert np.all(occ[:-1] | ~occ[1:])


def test_template_q_and_p_are_the_same_triangle_and_barycentrics(posed_maps):
    out, topo, t = posed_maps["out"], posed_maps["topo"], posed_maps["t"]
    hits = out["hits"]
    occ = hits.occupied
    f, b = hits.face[occ], hits.bary[occ]
    q_ref = np.einsum("nk,nkc->nc", b, topo.extend(t.canonical_vertices)[topo.ext_faces[f]])
    p_ref = np.einsum("nk,nkc->nc", b, topo.extend(posed_maps["vc"])[topo.ext_faces[f]])
    k, h, w = out["occupancy"].shape
    q = out["Q"].reshape(k, h * w, 3)[occ]
    p = out["P"].reshape(k, h * w, 3)[occ]
    np.testing.assert_allclose(q, q_ref, atol=2e-6)
    np.testing.assert_allclose(p, p_ref, atol=2e-5)
    assert np.all(b >= -1e-9) and np.allclose(b.sum(axis=1), 1)
    # Empty layers hold zeros.
    assert not np.any(out["P"][out["occupancy"] == 0]) and not np.any(out["Q"][out["occupancy"] == 0])


def test_q_is_invariant_to_pose_and_camera_while_p_is_not(horse):
    t = horse
    topo = raycast.topology(t.vertices, t.faces)
    q_ext = topo.extend(t.canonical_vertices)
    rng = np.random.default_rng(3)
    faces = rng.choice(len(t.faces), 300, replace=False)
    seen = []
    for clip, frame, eye in (("Walk", 3, [3.0, -2.5, 1.5]), ("Eating", 20, [-2.0, -3.5, 0.8])):
        pose = poses.clip_pose(t, clip, frame)
        v = t.pose_vertices(pose.rotations, pose.root_translation, pose.offsets)
        w2c = camera.look_at(eye, [0.0, 0.0, 0.9])
        vc = v @ w2c[:3, :3].T + w2c[:3, 3]
        centroid = topo.extend(vc)[topo.ext_faces[faces]].mean(axis=1)
        welded = topo.weld(vc)
        hits = raycast.cast(welded, topo.faces, centroid, 4, neighbours=topo.neighbours)
        visible = hits.face[0] == faces  # rays aimed at a triangle's centroid that see it first
        q = raycast.interpolate(q_ext, topo.ext_faces, hits.face[0], hits.bary[0])
        p = hits.t[0][:, None] * centroid
        seen.append((visible, q, p))
    both = seen[0][0] & seen[1][0]
    assert both.sum() > 20
    q_centroid = q_ext[topo.ext_faces[faces]].mean(axis=1)
    for _, q, _ in seen:
        np.testing.assert_allclose(q[both], q_centroid[both], atol=1e-6)
    assert np.min(np.linalg.norm(seen[0][2][both] - seen[1][2][both], axis=1)) > 0.05
