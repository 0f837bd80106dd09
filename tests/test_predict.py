"""`dualpm predict` through the real command line (in process and against a server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from dualpm_addon import pointmap
from tests.server_fixtures import ROOT, blob_photo, photo, server, stand_in_model  # noqa: F401


def _dualpm(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "dualpm_addon.cli", "predict", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=e)


def test_batch_with_one_failure(tmp_path, stand_in_model):
    Image.fromarray(blob_photo()).save(tmp_path / "blob.png")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(tmp_path / "empty.jpg")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG junk")
    out = tmp_path / "out"
    p = _dualpm(str(tmp_path / "blob.png"), str(tmp_path / "empty.jpg"), str(tmp_path / "junk.png"),
                photo("horse.png"), "--out", str(out), "--model", stand_in_model, "--json", str(tmp_path / "s.json"))
    assert p.returncode == 2, p.stderr  # two photos failed
    assert p.stdout == ""
    assert sorted(os.listdir(out)) == ["blob.npz", "horse.npz"]
    assert "[2/4]" in p.stderr and "no animal found in empty.jpg" in p.stderr
    assert "junk.png: damaged or unreadable image" in p.stderr or "junk.png: not an image" in p.stderr
    maps = pointmap.load(str(out / "blob.npz"))
    assert maps["crop_box"].shape == (4,) and maps["P"].shape == (4, 160, 160, 3)
    summary = json.load(open(tmp_path / "s.json"))
    assert summary["failed"] == 2 and summary["photos"][0]["points"] > 0


def test_mask_and_server(tmp_path, server):
    Image.fromarray(blob_photo()).save(tmp_path / "a.png")
    m = np.zeros((600, 900), np.uint8)
    m[100:300, 100:400] = 255
    Image.fromarray(m).save(tmp_path / "a_mask.png")
    p = _dualpm(str(tmp_path / "a.png"), "--out", str(tmp_path), "--mask", str(tmp_path / "a_mask.png"),
                "--server", server.url, env={"DUALPM_TOKEN": server.token})
    assert p.returncode == 0, p.stderr
    maps = pointmap.load(str(tmp_path / "a.npz"))
    x0, y0, x1, y1 = maps["crop_box"]
    assert abs((x0 + x1) / 2 - 250) < 1 and abs((y0 + y1) / 2 - 200) < 1  # the mask's box, not the blob's


def test_usage_errors_exit_2(tmp_path, stand_in_model):
    p = _dualpm("a.png", "b.png", "--out", str(tmp_path), "--mask", "m.png", "--model", stand_in_model)
    assert p.returncode == 2 and "2 photos" in p.stderr and "--mask-dir" in p.stderr
    p = _dualpm("a.png", "--out", str(tmp_path), "--mask-dir", str(tmp_path / "nope"), "--model", stand_in_model)
    assert p.returncode == 2 and "--mask-dir" in p.stderr and "no such folder" in p.stderr
    p = _dualpm("a.png", "--out", str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert p.returncode == 2 and "no such file" in p.stderr
    p = _dualpm("a.png", "--out", str(tmp_path), "--server", "http://127.0.0.1:9", "--token", "x")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "cannot reach the inference server" in p.stderr


def _box_mask(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def test_masks_are_found_as_reconstruct_finds_them(tmp_path, stand_in_model):
    """--mask-dir, NAME.mask.png beside, the photo's alpha, none: the lookup of dualpm_addon/masks.py;
    each map's crop is the square around the mask it used."""
    from dualpm_addon import preprocess

    photos, mdir, out = tmp_path / "photos", tmp_path / "masks", tmp_path / "out"
    photos.mkdir()
    mdir.mkdir()
    img = blob_photo()
    h, w = img.shape[:2]
    boxes = {"indir": (100, 100, 420, 330), "beside": (480, 120, 820, 420), "alpha": (460, 140, 840, 410)}
    for n in ("indir", "beside", "plain", "bad"):
        Image.fromarray(img).save(photos / f"{n}.png")
    Image.fromarray(_box_mask((h, w), *boxes["indir"])).save(mdir / "indir.mask.png")
    Image.fromarray(_box_mask((h, w), 0, 0, 50, 50)).save(photos / "indir.mask.png")  # loses to --mask-dir
    Image.fromarray(_box_mask((h, w), *boxes["beside"])).save(photos / "beside.mask.png")
    Image.fromarray(np.dstack([img, _box_mask((h, w), *boxes["alpha"])])).save(photos / "alpha.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(photos / "bad.mask.png")
    everything = sorted(str(p) for p in photos.iterdir())
    p = _dualpm(*everything, "--out", str(out), "--mask-dir", str(mdir), "--model", stand_in_model,
                "--json", str(tmp_path / "s.json"))
    assert p.returncode == 1, p.stderr  # bad's mask has the wrong size
    assert "beside.mask.png: a mask" in p.stderr
    assert sorted(os.listdir(out)) == ["alpha.npz", "beside.npz", "indir.npz", "plain.npz"]
    summary = json.loads((tmp_path / "s.json").read_text())
    entries = {os.path.splitext(os.path.basename(e["photo"]))[0]: e for e in summary["photos"]}
    assert entries["indir"]["mask"] == {"source": "mask-dir", "path": str(mdir / "indir.mask.png")}
    assert entries["beside"]["mask"] == {"source": "beside", "path": str(photos / "beside.mask.png")}
    assert entries["alpha"]["mask"] == {"source": "alpha", "path": None}
    assert entries["plain"]["mask"] == {"source": "none", "path": None}
    assert "mask bad.mask.png is 12x10, the photo is 900x600" in entries["bad"]["error"]
    for n, (x0, y0, x1, y1) in boxes.items():
        want = preprocess.square_box((x0, y0, x1, y1))
        assert np.allclose(pointmap.load(str(out / f"{n}.npz"))["crop_box"], want, atol=0.01), n
