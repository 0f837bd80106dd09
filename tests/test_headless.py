"""The batch command: `dualpm reconstruct` (bpy 5.0 from .venv) and the same module inside an
installed extension as `blender -b --python-expr` runs it (bpy 4.2 LTS), on real photos, the real
server subprocess and the oracle model (tests/extension_fixtures.py)."""

import json
import os
import subprocess

import numpy as np
import pytest

from . import extension_env as env

DUALPM = os.path.join(env.ROOT, ".venv", "bin", "dualpm")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return env.make_data(str(tmp_path_factory.mktemp("dualpm-data")))


def _dualpm(*args, timeout=600):
    return subprocess.run([DUALPM, *args], capture_output=True, text=True, timeout=timeout, cwd=env.ROOT)


@pytest.mark.slow
def test_batch_writes_four_files_per_photo_and_counts_failures(data, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    (out / "damaged.glb").write_bytes(b"stale output of an earlier run")
    twin = tmp_path / "twin"
    twin.mkdir()
    os.symlink(os.path.join(data, "synthetic.png"), twin / "synthetic.png")
    photos = [os.path.join(data, "synthetic.png"), env.CHELSEA, os.path.join(data, "damaged.png"),
              str(twin / "synthetic.png")]
    args = [*photos, "--out", str(out), "--model", os.path.join(data, "oracle.onnx")]
    if os.path.isfile(env.QUADRUPED_BVH):
        args += ["--bvh", env.QUADRUPED_BVH]
    proc = _dualpm("reconstruct", *args)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one photo failed
    names = sorted(os.listdir(out))
    assert not [n for n in names if "partial" in n], names
    assert "damaged.json" in names and not [n for n in names if n.startswith("damaged.") and n != "damaged.json"]
    failed = json.loads((out / "damaged.json").read_text())
    assert failed["status"] == "failed" and "not an image" in failed["reason"]
    for stem, photo in (("synthetic", photos[0]), ("chelsea", photos[1]), ("synthetic_2", photos[3])):
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["status"] == "ok"
        assert summary["points_kept"] >= 1000 and summary["bones"] == 46 and summary["bones_fitted"] > 30
        assert summary["fit_residual_rms_m"] > 0 and summary["model_version"] == "oracle-test"
        assert set(summary["timings_s"]) >= {"load", "inference", "fit", "import", "write_blend", "write_glb"}
        with open(out / f"{stem}.glb", "rb") as f:
            assert f.read(4) == b"glTF"
        with open(out / f"{stem}.blend", "rb") as f:
            head = f.read(12)
        assert head.startswith(b"BLENDER") or head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd"
        with Image.open(out / f"{stem}.png") as im:
            w, h = im.size
            preview = np.asarray(im.convert("RGB"))
        assert h == 480 and w > 480
        assert preview[:, -480:].std() > 5  # the novel view is not blank
        if "--bvh" in args:
            assert summary["retarget"]["frames"] > 1
    assert "3 of 4 photos reconstructed" in proc.stderr


def test_bad_arguments_exit_2_before_any_photo(data, tmp_path):
    proc = _dualpm("reconstruct", os.path.join(data, "synthetic.png"), "--out", str(tmp_path / "o"),
                   "--bvh", str(tmp_path / "missing.bvh"))
    assert proc.returncode == 2 and "missing.bvh: no such file" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_blender_background_batch_in_the_installed_extension(data, tmp_path, tmp_path_factory):
    out = str(tmp_path / "out")
    argv = [os.path.join(data, "synthetic.png"), "--out", out, "--model", os.path.join(data, "oracle.onnx")]
    r = env.run("4.2", "headless", data, tmp_path_factory, "--argv", json.dumps(argv))
    assert r["exit_code"] == 0
    assert r["files"] == ["synthetic.blend", "synthetic.glb", "synthetic.json", "synthetic.png"]
    assert r["blender"].startswith("4.2")
