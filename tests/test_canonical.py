"""The canonical space: one Q for every species.

Landmarks found through the skeleton on each species' own mesh, carried into Q, must land close
together. The table is printed (pytest -s) and recorded in docs/canonical.md.
"""

import os

import numpy as np
import pytest

from dualpm_addon import canonical, template
from dualpm_addon.errors import DualPMError

from .conftest import SPECIES


@pytest.fixture(scope="module")
def all_templates(templates_dir):
    return {s: template.load(os.path.join(templates_dir, f"{s}.npz")) for s in SPECIES}


def landmark_table(all_templates):
    ref = all_templates["horse"]
    q = {s: canonical.landmarks(t, t.canonical_vertices) for s, t in all_templates.items()}
    table = {}
    for name in canonical.LANDMARK_BONES:
        pts = np.stack([q[s][name] for s in SPECIES])
        centre = np.median(pts, axis=0)
        table[name] = dict(zip(SPECIES, np.linalg.norm(pts - centre, axis=1) / ref.body_length))
    return table


def test_landmarks_agree_across_species(all_templates):
    table = landmark_table(all_templates)
    print("\nlandmark deviation from the median across species, % of horse body length")
    print(f"{'':18s}" + "".join(f"{s[:6]:>7s}" for s in SPECIES))
    for name, row in table.items():
        print(f"{name:18s}" + "".join(f"{100 * row[s]:7.1f}" for s in SPECIES))
    for name, row in table.items():
        for species, dev in row.items():
            assert dev <= 0.05, f"{name} of {species} is {100 * dev:.1f}% of body length from the others"


def test_reference_is_its_own_canonical_space(all_templates):
    horse = all_templates["horse"]
    assert np.array_equal(horse.canonical_vertices, horse.vertices)
    assert np.allclose(canonical.bone_maps(horse, horse), np.eye(4), atol=1e-9)


def test_canonical_points_are_continuous_over_the_mesh(all_templates):
    # No tearing at bone boundaries: no edge of any species gets longer in Q than twice the
    # horse's own longest edge (the low-poly horse has 30 cm edges; a tear would be metres).
    def edges(t, pts):
        e = np.concatenate([t.faces[:, [0, 1]], t.faces[:, [1, 2]], t.faces[:, [2, 0]]])
        return np.linalg.norm(pts[e[:, 0]] - pts[e[:, 1]], axis=1)

    horse = all_templates["horse"]
    bound = 2 * edges(horse, horse.vertices).max()
    for s, t in all_templates.items():
        assert edges(t, t.canonical_vertices).max() <= bound, s


def test_rig_mismatch_is_one_line(all_templates):
    import dataclasses

    from dualpm_addon.skeleton import Skeleton

    horse = all_templates["horse"]
    sk = horse.skeleton
    renamed = Skeleton(tuple(f"bone{i}" for i in range(sk.num_joints)), sk.parents, sk.rest_heads,
                       sk.rest_tails, sk.rest_frames)
    alien = dataclasses.replace(horse, species="robot", skeleton=renamed)
    with pytest.raises(DualPMError, match=r"robot.glb: rig does not match the reference 'horse': it shares 0 of"):
        canonical.carry_to_reference(alien, horse, source="robot.glb")
