"""Mesh-driven tail coordinates (dualpm_addon/tails.py) on the baked animals."""

import os

import numpy as np
import pytest

from dualpm_addon import tails, template

from .conftest import SPECIES


@pytest.fixture(scope="module")
def shiba(templates_dir):
    return template.load(os.path.join(templates_dir, "shibainu.npz"))


def test_tail_coordinate_runs_from_root_to_tip(templates_dir):
    for s in SPECIES:
        t = template.load(os.path.join(templates_dir, f"{s}.npz"))
        u = tails.tail_coordinate(t)
        on = tails.tail_weight(t) > 0
        assert np.all(np.isfinite(u[on])) and np.all(np.isnan(u[~on])), s
        assert u[on].min() >= 0 and np.isclose(u[on].max(), 1.0), s
        # vertices skinned mostly to the body sit near the root, fully-tail ones further out
        assert np.median(u[on & (tails.tail_weight(t) < 0.5)]) < np.median(u[tails.tail_weight(t) > 0.99]), s


def test_curled_tail_tip_is_far_along_the_skin_not_near_the_root(shiba):
    # The shiba's tail curls over its back: its tip is close to the root in space but at the end
    # of the walk over the skin. Bone-driven maps missed exactly this.
    d = tails.tail_distance(shiba)
    curve = tails.tail_curve(shiba)
    tip = shiba.vertices[np.nanargmax(d)]
    assert np.nanmax(d) > 1.5 * np.linalg.norm(tip - curve.centre[0])
    assert curve.length > 0.5 * np.nanmax(d)


def test_carrying_a_tail_onto_itself_is_the_identity(shiba):
    u = tails.tail_coordinate(shiba)
    on = np.isfinite(u)
    curve = tails.tail_curve(shiba, u)
    back = tails.carry_tail(shiba.vertices[on], u[on], curve, curve, ratio=1.0)
    assert np.abs(back - shiba.vertices[on]).max() < 1e-9


def test_tip_lands_on_the_reference_tip(shiba, horse):
    u = tails.tail_coordinate(shiba)
    tip = np.nanargmax(u)
    q = tails.carry_tail(shiba.vertices[tip:tip + 1], u[tip:tip + 1], tails.tail_curve(shiba, u),
                         tails.tail_curve(horse), ratio=horse.body_length / shiba.body_length)
    ref_tip = tails.tail_curve(horse).centre[-1]
    assert np.linalg.norm(q[0] - ref_tip) < 0.05 * horse.body_length


def test_a_rig_without_a_tail_has_no_tail_coordinates(horse):
    import dataclasses

    no_tail = dataclasses.replace(horse, skin_weights=np.where(
        np.isin(horse.skin_joints, [horse.skeleton.index("Tail1")] +
                horse.skeleton.descendants(horse.skeleton.index("Tail1"))), 0.0, horse.skin_weights))
    assert not np.any(tails.tail_weight(no_tail) > 0)
    assert np.all(np.isnan(tails.tail_coordinate(no_tail)))
    assert tails.tail_curve(no_tail) is None


def test_a_tail_that_is_its_own_mesh_island_starts_nearest_the_body(horse):
    # Cut every face that joins tail and body: the walk must start where the tail is closest
    # to the body, not at an arbitrary tail vertex.
    import dataclasses

    w = tails.tail_weight(horse)
    tail_faces = (w[horse.faces] > 0).all(axis=1)
    body_faces = (w[horse.faces] == 0).all(axis=1)
    cut = dataclasses.replace(horse, faces=horse.faces[tail_faces | body_faces])
    d = tails.tail_distance(cut)
    on = np.isfinite(d)
    start = cut.vertices[on][np.argmin(d[on])]
    body = cut.vertices[w == 0]
    nearest = np.linalg.norm(cut.vertices[on][:, None] - body[None], axis=2).min(axis=1).min()
    assert np.isclose(np.linalg.norm(body - start, axis=1).min(), nearest)
