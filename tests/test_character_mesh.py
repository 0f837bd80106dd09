"""The character mesh: welded, closed, symmetric, skinned and UV-mapped (dualpm_addon.character)."""

import numpy as np
import pytest

from dualpm_addon import template as template_mod
from dualpm_addon.character import load_character, subdivide
from dualpm_addon.character.mesh import topology_and_mesh
from dualpm_addon.errors import DualPMError


@pytest.fixture(scope="module")
def horse():
    return template_mod.load_default()


@pytest.fixture(scope="module")
def mesh(horse):
    return load_character(horse)


def test_weld_gives_the_closed_template(horse):
    w, f, index = subdivide.weld(horse.vertices, horse.faces)
    assert len(w) < len(horse.vertices)
    assert np.abs(w[index] - horse.vertices).max() < 1e-4
    assert np.all(subdivide.edge_face_counts(f) == 2)


def test_loop_matrix_rows_are_affine_and_faces_quadruple(horse):
    w, f, _ = subdivide.weld(horse.vertices, horse.faces)
    s, fine, parent = subdivide.subdivide(f, len(w), 2)
    assert np.allclose(np.asarray(s.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert len(fine) == 16 * len(f) and np.array_equal(np.bincount(parent), np.full(len(f), 16))
    assert np.all(subdivide.edge_face_counts(fine) == 2)


def test_subdivision_refuses_an_open_mesh():
    with pytest.raises(DualPMError, match="not a closed manifold"):
        subdivide.subdivide(np.array([[0, 1, 2]]), 3, 1)


def test_character_is_manifold_and_subdivided_once(horse, mesh):
    assert mesh.levels == 1 and len(mesh.faces) == 4 * len(horse.faces)
    assert np.all(subdivide.edge_face_counts(mesh.welded_faces) == 2)
    # Euler characteristic 2: one closed surface of genus 0, like the template.
    e = len(subdivide.edges(mesh.welded_faces)[0])
    assert mesh.num_welded - e + len(mesh.faces) == 2


def test_every_vertex_is_skinned(mesh):
    assert mesh.skin_joints.shape == mesh.skin_weights.shape == (mesh.num_vertices, 4)
    assert np.allclose(mesh.skin_weights.sum(axis=1), 1.0, atol=1e-9)
    assert mesh.skin_weights.min() >= 0 and mesh.skin_weights.max(axis=1).min() > 0.25


def test_uvs_in_range_and_unfolded(mesh):
    assert mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0
    tri = mesh.uv[mesh.faces]
    area = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(area > 0)  # no UV triangle folds over (outward faces stay counter-clockwise)
    left = mesh.vertices[:, 0] > 1e-6
    assert np.all(mesh.uv[left, 0] < 0.5) and np.all(mesh.uv[mesh.vertices[:, 0] < -1e-6, 0] > 0.5)


def test_mirror_twins_share_mirrored_uvs(mesh):
    m = mesh.mirror
    assert np.array_equal(m[m], np.arange(mesh.num_vertices))
    assert np.allclose(mesh.vertices[m], mesh.vertices * [-1, 1, 1], atol=1e-9)
    assert np.allclose(mesh.canonical[m], mesh.canonical * [-1, 1, 1], atol=1e-9)
    assert np.allclose(mesh.uv[m], np.c_[1.0 - mesh.uv[:, 0], mesh.uv[:, 1]], atol=1e-12)
    assert np.array_equal(mesh.face_material[mesh.face_mirror], mesh.face_material)


def test_split_vertices_agree_with_their_welded_vertex(mesh):
    w = mesh.welded_vertices()
    assert np.allclose(w[mesh.weld], mesh.vertices)


def test_load_is_cached_per_template(horse, mesh):
    assert load_character(horse) is mesh
    topo, again = topology_and_mesh(horse)
    assert again is mesh and topo.subdivision.shape == (mesh.num_welded, len(topo.base_vertices))


def test_self_intersection_check_finds_a_crossing_and_the_meshes_have_none(horse, mesh):
    from dualpm_addon.character import quality

    tet = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert quality.is_closed_manifold(f) and quality.self_intersections(tet, f) == 0
    two = np.concatenate([tet, tet + 0.3])  # a second tetrahedron through the first
    assert quality.self_intersections(two, np.concatenate([f, f + 4])) > 0
    w, wf, _ = subdivide.weld(horse.vertices, horse.faces)
    assert quality.self_intersections(w, wf) == 0  # the template does not cut itself...
    assert quality.self_intersections(mesh.welded_vertices(), mesh.welded_faces) == 0  # ...nor its character
