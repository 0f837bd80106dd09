"""Several animals in one photo: `dualpm reconstruct --all-animals` and the panel's All Animals
checkbox, on a real two-animal photo (imgaug's quokka and Muybridge's cat side by side), with the
shipped predictor and segmenter in real ONNX Runtime and real bpy 5.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from . import extension_env as env

DUALPM = os.path.join(env.ROOT, ".venv", "bin", "dualpm")
PHOTOS = os.path.join(env.ROOT, ".cache", "photos")
HEIGHT = 300


@pytest.fixture(scope="module")
def two_animals(tmp_path_factory) -> tuple[str, int]:
    """(path, x where the cat's panel starts): the quokka, then the cat, each HEIGHT pixels high."""
    from PIL import Image

    paths = [os.path.join(PHOTOS, n) for n in ("quokka.jpg", "muybridge_cat.png")]
    if not all(os.path.isfile(p) for p in paths):
        pytest.skip("run scripts/data/photos.sh to fetch the quokka and the cat")
    panels = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            panels.append(im.resize((round(im.width * HEIGHT / im.height), HEIGHT), Image.Resampling.LANCZOS))
    out = Image.new("RGB", (sum(p.width for p in panels), HEIGHT))
    out.paste(panels[0], (0, 0))
    out.paste(panels[1], (panels[0].width, 0))
    path = str(tmp_path_factory.mktemp("two") / "two.png")
    out.save(path)
    return path, panels[0].width


def _dualpm(*args):
    return subprocess.run([DUALPM, *args], capture_output=True, text=True, timeout=300, cwd=env.ROOT)


def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def test_all_animals_writes_one_file_set_per_animal_largest_first(two_animals, tmp_path):
    photo, split = two_animals
    out = tmp_path / "out"
    out.mkdir()
    (out / "two_animal3.json").write_text("{}")  # an earlier run's third animal: removed
    (out / "two_animal3.glb").write_bytes(b"stale")
    proc = _dualpm("reconstruct", photo, "--out", str(out), "--all-animals")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted(f"two_animal{k}.{e}" for k in (1, 2)
                                             for e in ("blend", "glb", "json", "png"))
    s = [json.loads((out / f"two_animal{k}.json").read_text()) for k in (1, 2)]
    for k, summary in enumerate(s, 1):
        assert summary["status"] == "ok" and summary["animal_index"] == k and summary["animals_found"] == 2
        assert summary["mask_source"] == "segmenter" and summary["points_kept"] >= 1000
        assert summary["parameters"]["fit"] == "photo"
        with open(out / f"two_animal{k}.glb", "rb") as f:
            assert f.read(4) == b"glTF"
    quokka, cat = (x["animal_box"] for x in s)
    assert quokka[2] <= split + 2 and cat[0] >= split - 2  # each output is the animal of its own panel
    # the largest first: the quokka's outline covers more of the photo than the cat's (41.7k, 24.6k px)
    assert _area(quokka) > _area(cat)
    assert s[0]["crop_box"] != s[1]["crop_box"]
    assert "2 of 2 animals of 1 photos" in proc.stderr


def test_default_takes_the_largest_and_says_how_many(two_animals, tmp_path):
    photo, split = two_animals
    proc = _dualpm("reconstruct", photo, "--out", str(tmp_path), "--fit", "points")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == [f"two.{e}" for e in ("blend", "glb", "json", "png")]
    s = json.loads((tmp_path / "two.json").read_text())
    assert s["animals_found"] == 2 and s["animal_index"] == 1 and s["animal_box"][2] <= split + 2
    assert s["parameters"]["fit"] == "points" and s["photo_fit"] == {}  # the 3D fit: no photo terms


def test_bad_fit_choice_exits_2(two_animals, tmp_path):
    proc = _dualpm("reconstruct", two_animals[0], "--out", str(tmp_path / "o"), "--fit", "outline")
    assert proc.returncode == 2 and "--fit" in proc.stderr and not (tmp_path / "o").exists()


SCRIPT = r"""
import json, sys
import bpy
sys.path.insert(0, ROOT)
from tests import blender_scenarios as bs

bs.install("dev")
rec = bs.addon_module("operators.reconstruct")
assert "all_animals" in bpy.types.Scene.bl_rna.properties["dualpm"].fixed_type.properties
out = {}
for flag in (False, True):
    bpy.context.scene.dualpm.all_animals = flag
    before = set(bpy.data.collections.keys())
    r = bpy.ops.dualpm.reconstruct(filepath=PHOTO)
    new = sorted(set(bpy.data.collections.keys()) - before)
    out[str(flag)] = {"result": sorted(r), "collections": new,
                      "rigs": [sum(o.type == "ARMATURE" for o in bpy.data.collections[c].objects) for c in new],
                      "animals": [[x.animal_index, x.animals_found, x.num_points] for x in rec.last_results]}
bs.addon_module("operators.session").shutdown()
print("RESULT " + json.dumps(out))
"""


def test_blender_checkbox_makes_one_collection_per_animal(two_animals, tmp_path):
    photo, _ = two_animals
    code = SCRIPT.replace("ROOT", repr(env.ROOT)).replace("PHOTO", repr(photo))
    e = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), PYTHONDONTWRITEBYTECODE="1")
    e.pop("PYTHONPATH", None)
    proc = subprocess.run([env.blender_python("5.0"), "-c", code], capture_output=True, text=True, env=e,
                          cwd=str(tmp_path), timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(lines[-1][len("RESULT "):])
    off, on = r["False"], r["True"]
    assert off["result"] == ["FINISHED"] and off["collections"] == ["DualPM two"] and off["rigs"] == [1]
    assert [a[:2] for a in off["animals"]] == [[1, 2]]  # the largest, and how many there are
    assert on["result"] == ["FINISHED"] and on["rigs"] == [1, 1]
    assert on["collections"] == ["DualPM two animal 1", "DualPM two animal 2"]
    assert [a[:2] for a in on["animals"]] == [[1, 2], [2, 2]] and min(a[2] for a in on["animals"]) >= 1000
    assert np.isclose(on["animals"][0][2], off["animals"][0][2], rtol=0.05)  # the same largest animal
