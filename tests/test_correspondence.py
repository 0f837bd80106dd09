import numpy as np
import pytest

from dualpm_addon import correspondence as corr
from dualpm_addon.errors import DualPMError
from dualpm_addon.skinning import dense_weights
from tests import fit_fixtures as fx


@pytest.fixture(scope="module")
def index(horse):
    return corr.build_index(horse)


def surface_samples(t, n, seed=0):
    """Points on the canonical surface with the mesh's own interpolated (dense) skin weights."""
    rng = np.random.default_rng(seed)
    v, f = t.canonical_vertices, t.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    fi = rng.choice(len(f), n, p=area / area.sum())
    b = rng.dirichlet([1.0, 1.0, 1.0], n)
    w = dense_weights(t.skin_joints, t.skin_weights, t.skeleton.num_joints)
    return np.einsum("nk,nkc->nc", b, v[f[fi]]), np.einsum("nk,nkj->nj", b, w[f[fi]])


def test_index_covers_the_surface_densely(horse, index):
    assert index.points.shape[0] > 10 * len(horse.vertices)
    assert np.allclose(index.points[: len(horse.vertices)], horse.canonical_vertices)
    assert np.allclose(index.skin_weights.sum(axis=1), 1.0)
    q, _ = surface_samples(horse, 5000)
    d, _ = index.tree.query(q)
    # Grid samples every DENSE_SPACING inside each triangle: no surface point is far from one.
    assert d.max() < corr.DENSE_SPACING
    # A bare vertex tree would not do: the low-poly mesh leaves surface points 10+ cm from a vertex.
    from scipy.spatial import cKDTree

    assert cKDTree(horse.canonical_vertices).query(q)[0].max() > 0.08


@pytest.mark.parametrize("k", [1, 4])
def test_surface_points_match_with_the_mesh_weights(horse, index, k):
    q, w_true = surface_samples(horse, 4000, seed=1)
    m = corr.match(index, q, k=k)
    assert m.valid.all()
    assert np.percentile(m.distance, 99) < 0.015
    assert np.allclose(m.skin_weights.sum(axis=1), 1.0)
    w = dense_weights(m.skin_joints, m.skin_weights, horse.skeleton.num_joints)
    assert np.abs(w - w_true).sum(axis=1).mean() < 0.06
    assert np.mean(m.dominant == np.argmax(w_true, axis=1)) > 0.97
    assert np.all(m.skin_weights[:, :-1] >= m.skin_weights[:, 1:])  # largest first


def test_far_and_non_finite_points_are_rejected(horse, index):
    q, _ = surface_samples(horse, 100, seed=2)
    far = q + np.array([0.0, 0.0, 3.0])  # above the horse's ears
    q_all = np.concatenate([q, far, np.full((3, 3), np.nan)])
    m = corr.match(index, q_all)
    assert m.valid[:100].all() and not m.valid[100:].any()
    assert np.isclose(m.max_distance, corr.REJECT_FRACTION * horse.body_length)
    assert np.all(np.isinf(m.distance[-3:]))
    assert np.all(m.skin_joints[-3:, 0] == 0) and np.all(m.skin_weights[-3:, 0] == 1)
    # An explicit threshold wins: 5 m keeps the far points.
    assert corr.match(index, far, max_distance=5.0).valid.all()


@pytest.mark.parametrize("k", [1, 4])
def test_without_far_skin_valid_points_match_the_same(horse, index, k):
    q, _ = surface_samples(horse, 300, seed=3)
    rng = np.random.default_rng(3)
    q = q + rng.normal(0, 0.05, q.shape)  # a predictor's Q: some near the surface, some off it
    q[:5] = np.nan
    a = corr.match(index, q, k=k)
    b = corr.match(index, q, k=k, skin_far=False)
    assert 0 < (~a.valid).sum() < len(q) and np.array_equal(a.valid, b.valid)
    v = a.valid
    assert np.array_equal(a.skin_joints[v], b.skin_joints[v]) and np.array_equal(a.skin_weights[v], b.skin_weights[v])
    assert np.array_equal(a.distance[v], b.distance[v])
    assert np.all(b.skin_joints[~v, 0] == 0) and np.all(b.skin_weights[~v, 0] == 1) and np.isinf(b.distance[~v]).all()


def test_other_species_land_near_the_reference_surface(index, templates_dir):
    # Q of every species is the horse's canonical space: their points land on its surface, but
    # for parts the horse lacks (the bull's horns: 10 % of its vertices are rejected).
    for species, kept in (("bull", 0.85), ("fox", 0.98)):
        t = fx.load_species(templates_dir, species)
        m = corr.match(index, t.canonical_vertices)
        assert np.median(m.distance) < 0.03, species
        assert m.valid.mean() > kept, species


def test_bad_input_is_a_one_line_error(index):
    with pytest.raises(DualPMError, match=r"Q has shape \(5, 2\)"):
        corr.match(index, np.zeros((5, 2)))
    with pytest.raises(DualPMError, match="k=0"):
        corr.match(index, np.zeros((5, 3)), k=0)
    with pytest.raises(DualPMError, match="spacing"):
        corr.build_index(fx.template_mod.load_default(), spacing=0)
