"""Every objective term's analytic Jacobian against central finite differences, on the photo
model (all parameters: root, pose, bone scales, focal, thickness)."""

import numpy as np
import pytest

from dualpm_addon import correspondence as corr
from dualpm_addon import fitting
from dualpm_addon.fitting import terms
from dualpm_addon.fitting.chain import BoundPoints, ChainModel
from tests import fit_fixtures as fx

K = np.array([[300.0, 0, 80], [0, 300.0, 80], [0, 0, 1]])


@pytest.fixture(scope="module")
def setup(horse):
    ctx = fitting.prepare(horse)
    scene = fx.sample_scene(horse, seed=7, n_points=120)
    m = corr.match(ctx.index, scene["Q"])
    free = np.nonzero(~ctx.fixed)[0]
    model = ChainModel(ctx, free, np.tile(np.eye(3), (horse.skeleton.num_joints, 1, 1)), photo=True)
    bound = BoundPoints(model, scene["Q"], m.skin_joints, m.skin_weights)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.2, model.n_params)
    x[0:3] = [0.2, -1.4, 0.1]
    x[3:6] = [0.1, -0.2, 6.0]  # in front of the camera
    ids = np.arange(0, len(horse.vertices), 9)
    verts = BoundPoints(model, horse.vertices[ids], horse.skin_joints[ids], horse.skin_weights[ids])
    uv = rng.uniform(20, 140, (len(scene["Q"]), 2))
    mask = np.zeros((160, 160), bool)
    mask[50:110, 30:130] = True
    return model, bound, verts, x, scene, uv, mask


def numeric(term, x, step=1e-6):
    num = np.zeros((len(term.residuals(x)), len(x)))
    for i in range(len(x)):
        d = np.zeros_like(x)
        d[i] = step
        num[:, i] = (term.residuals(x + d) - term.residuals(x - d)) / (2 * step)
    return num


def check(term, x, share=1.0):
    """The analytic Jacobian equals the numeric one to 1e-5 of its largest entry, on every row
    (share 1), or on that share of the rows for terms that are only piecewise smooth (a
    bilinear distance field, a nearest-neighbour match) where a step can cross a kink."""
    jac, num = term.jacobian(x), numeric(term, x)
    assert jac.shape == num.shape
    tol = 1e-5 * max(1.0, np.abs(num).max())
    ok = np.all(np.abs(jac - num) < tol, axis=1)
    assert ok.mean() >= share, f"{type(term).__name__}: {ok.mean():.3f} of rows match"
    return jac


def test_points3d(setup):
    model, bound, _, x, scene, _, _ = setup
    jac = check(terms.Points3D(bound, scene["P"], 0.5, weight=0.3), x)
    # It depends on every parameter kind but the focal length.
    assert np.abs(jac[:, model.col_focal]).max() == 0 and np.abs(jac[:, model.col_thick:]).max() > 0


def test_reprojection(setup):
    model, bound, _, x, _, uv, _ = setup
    w = np.linspace(0.5, 1.5, len(uv))
    jac = check(terms.Reprojection(bound, uv, K, 160, w), x)
    assert np.abs(jac[:, model.col_focal]).max() > 0


def test_silhouette_inside(setup):
    model, _, verts, x, _, _, mask = setup
    term = terms.SilhouetteInside(verts, mask, K)
    assert np.count_nonzero(term.residuals(x)) > 10  # some samples are outside: the test means something
    check(term, x, share=0.98)


def test_silhouette_fill(setup):
    model, _, verts, x, _, _, mask = setup
    check(terms.SilhouetteFill(verts, mask, K), x, share=0.98)


def _cover(setup, mask):
    model, _, verts, _, _, _, _ = setup
    horse = model.ctx.template
    mesh = BoundPoints(model, horse.vertices, horse.skin_joints, horse.skin_weights)
    return terms.SilhouetteCover(verts, mesh, horse.faces, mask, K)


def test_silhouette_cover(setup):
    model, _, verts, x, _, _, mask = setup
    term = _cover(setup, mask)
    r = term.residuals(x).reshape(-1, 2)
    # Some mask samples are covered (zero rows) and some are not: the test means something.
    assert 0 < np.count_nonzero(np.abs(r).sum(axis=1)) < len(r)
    check(term, x, share=0.98)


def test_silhouette_cover_charges_only_what_the_rig_misses(setup):
    """A mask the posed rig covers entirely costs nothing; one beside the rig costs every sample."""
    from scipy import ndimage

    from dualpm_addon import silhouette

    model, _, _, x, _, _, _ = setup
    horse = model.ctx.template
    mesh = BoundPoints(model, horse.vertices, horse.skin_joints, horse.skin_weights)
    kf = K.copy()
    kf[:2, :2] *= np.exp(model.log_focal(x))
    drawn = silhouette.rasterize(mesh.camera(x), horse.faces, kf, (160, 160))
    assert drawn.sum() > 200
    inner = ndimage.binary_erosion(drawn, iterations=2)
    assert np.count_nonzero(_cover(setup, inner).residuals(x)) == 0
    away = np.zeros((160, 160), bool)
    away[~ndimage.binary_dilation(drawn, iterations=3)] = True
    away[:, 40:] = False
    r = _cover(setup, away).residuals(x).reshape(-1, 2)
    assert len(r) > 50 and np.all(np.abs(r).sum(axis=1) > 0)


def test_priors(setup):
    model, _, _, x, _, _, _ = setup
    for term in (terms.PosePriorTerm(model, 0.1), terms.ScalePrior(model, 0.2), terms.FocalPrior(model, 0.3),
                 terms.ThicknessPrior(model, 2.0)):
        check(term, x)


def test_sample_field_grows_past_the_border():
    from dualpm_addon.fitting.terms.silhouette import outside_distance, sample_field

    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    field = outside_distance(mask)
    val, g = sample_field(field, np.array([[10.0, 10.0], [2.5, 10.5], [-10.5, 10.5]]))
    assert val[0] == 0 and val[1] == pytest.approx(3.0) and val[2] > val[1] + 10
    assert g[1, 0] < 0 and g[2, 0] < 0  # moving right (toward the mask) lowers the distance


def test_the_field_lets_an_animal_go_on_past_the_border_it_touches():
    from dualpm_addon.fitting.terms.silhouette import outside_distance, sample_field

    mask = np.zeros((20, 20), bool)
    mask[5:12, 0:10] = True  # cut by the left border
    pad = 10
    field = outside_distance(mask, pad)
    assert field.shape == (40, 40)
    out_left = np.array([[-6.5, 8.5], [-6.5, 16.5], [25.5, 8.5]]) + pad
    val, _ = sample_field(field, out_left)
    assert val[0] == 0  # straight out of the frame from where the mask meets it: the animal goes on
    assert val[1] == pytest.approx(5.0)  # beside that, out of frame, it costs its distance as inside
    assert val[2] > 10  # past a border the mask does not touch the animal has ended
    assert np.array_equal(field[pad:-pad, pad:-pad] == 0, mask)


def test_inside_term_does_not_pull_a_leg_back_into_the_frame(setup):
    from dualpm_addon.fitting.terms.projection import project
    from dualpm_addon.fitting.terms.silhouette import outside_distance

    model, bound, verts, x, scene, uv, mask = setup
    edge = int(np.median(np.nonzero(mask.any(axis=0))[0]))
    sub = mask[:, edge:]  # the frame starts at the animal's middle
    k = K.copy()
    k[0, 2] -= edge
    term = terms.SilhouetteInside(verts, sub, k)
    uvs = project(verts.camera(x), k, model.log_focal(x))[0]
    rows = np.nonzero(sub[:, 0])[0]
    # out of frame on the cut side, level with where the mask meets the frame
    gone = (uvs[:, 0] < -2) & (uvs[:, 1] > rows.min() + 1) & (uvs[:, 1] < rows.max())
    assert gone.sum() > 5
    padded = term.residuals(x)
    term.pad, term.field = 0, outside_distance(sub)  # the field before: pulled back into the frame
    unpadded = term.residuals(x)
    assert padded[gone].max() < 1e-9 < unpadded[gone].min()
    term.pad, term.field = max(sub.shape) // 2, outside_distance(sub, max(sub.shape) // 2)
    check(term, x)


def test_root_only_columns_are_the_full_jacobians_columns(setup):
    model, bound, verts, x, scene, uv, mask = setup
    for term in (terms.Points3D(bound, scene["P"], 0.5), terms.Reprojection(bound, uv, K, 160),
                 terms.SilhouetteInside(verts, mask, K), terms.SilhouetteFill(verts, mask, K), _cover(setup, mask)):
        full = term.jacobian(x)[:, model.active(True)]
        model.root_only = True
        try:
            part = term.jacobian(x)
        finally:
            model.root_only = False
        np.testing.assert_allclose(part, full, rtol=1e-12, atol=1e-12)
