"""The batch command: `dualpm reconstruct` (bpy 5.0 from .venv) and the same module inside an
installed extension as `blender -b --python-expr` runs it (bpy 4.2 LTS), on real photos, the real
server subprocess and the oracle model (tests/extension_fixtures.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dualpm_addon import preprocess

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
            assert summary["retarget"]["frames"] > 1 and "motion" not in summary  # the capture replaces it
    assert "3 of 4 photos reconstructed" in proc.stderr


def test_the_result_moves_by_default_and_motion_picks_the_clip(data, tmp_path):
    from dualpm_addon import gltf_write

    photo = os.path.join(data, "synthetic.png")
    for motion, clip in (("idle", "Idle"), ("walk", "Walk"), ("none", None)):
        out = tmp_path / motion
        args = [photo, "--out", str(out), "--model", os.path.join(data, "oracle.onnx")]
        proc = _dualpm("reconstruct", *args, *([] if motion == "idle" else ["--motion", motion]))
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "synthetic.json").read_text())
        with open(out / "synthetic.glb", "rb") as f:
            js, _ = gltf_write.read_glb(f.read())
        if clip is None:
            assert "motion" not in summary and not js.get("animations")
        else:
            motion_record = summary["motion"]
            assert motion_record["clip"] == clip and motion_record["frame_range"] == [1, motion_record["frames"]]
            assert [a["name"] for a in js["animations"]] == [motion_record["action"]]
    proc = _dualpm("reconstruct", photo, "--out", str(tmp_path / "x"), "--motion", "dance")
    assert proc.returncode == 2 and "invalid choice: 'dance'" in proc.stderr


def test_bad_arguments_exit_2_before_any_photo(data, tmp_path):
    proc = _dualpm("reconstruct", os.path.join(data, "synthetic.png"), "--out", str(tmp_path / "o"),
                   "--bvh", str(tmp_path / "missing.bvh"))
    assert proc.returncode == 2 and "missing.bvh: no such file" in proc.stderr
    assert not (tmp_path / "o").exists()


_SPAWN_ORDER = """
import builtins, json, subprocess, sys, threading
events, servers = [], []
real_import, real_popen = builtins.__import__, subprocess.Popen.__init__

def watch_import(name, *a, **k):
    if name == "bpy" and "bpy" not in sys.modules:
        events.append(["import bpy", threading.active_count()])
    return real_import(name, *a, **k)

def watch_popen(self, args, *a, **k):
    real_popen(self, args, *a, **k)
    if "model_server" in args:
        events.append(["spawn server", threading.active_count()])
        servers.append(self)

builtins.__import__, subprocess.Popen.__init__ = watch_import, watch_popen
from dualpm_addon import cli
rc = cli.main(["reconstruct", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "events": events, "server_alive": [p.poll() is None for p in servers]}))
"""


def test_the_server_is_spawned_before_bpy_imports_and_no_thread_runs_meanwhile(tmp_path):
    """The server starts beside bpy's import (~1 s each, in series before). No thread of ours
    may run during that import (a thread's lazy import against bpy's deadlocked the process):
    one thread at the spawn and at the import. A photo that fails before it needs the server
    leaves none behind."""
    photo = tmp_path / "damaged.png"
    photo.write_bytes(b"not an image")
    out = tmp_path / "out"
    user = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))  # not ~/.config/blender
    proc = subprocess.run([sys.executable, "-c", _SPAWN_ORDER, str(photo), str(out)], capture_output=True,
                          text=True, timeout=300, cwd=env.ROOT, env=user)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["events"] == [["spawn server", 1], ["import bpy", 1]], got
    assert got["rc"] == 1 and got["server_alive"] == [False]
    assert json.loads((out / "damaged.json").read_text())["status"] == "failed"


_THREAD_IMPORTS = """
import builtins, json, sys, threading
new, real_import = [], builtins.__import__

def watch_import(name, *a, **k):
    if threading.current_thread() is threading.main_thread():
        return real_import(name, *a, **k)
    before = len(sys.modules)
    module = real_import(name, *a, **k)
    if len(sys.modules) != before:
        new.append([threading.current_thread().name, name])
    return module

builtins.__import__ = watch_import
from dualpm_addon import cli
rc = cli.main(["reconstruct", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "new": new}))
"""


@pytest.mark.slow
def test_no_thread_imports_a_module_during_a_reconstruction(tmp_path):
    """The template warm-up runs beside the segmenter, the server's start and the predictor's
    HTTP (operators/reconstruct.py); a module imported for the first time on a thread, against
    one on the main thread, is how the bpy deadlock came about (dualpm_addon/client.py)."""
    photo = os.path.join(env.ROOT, ".cache", "photos", "muybridge_cat.png")
    if not os.path.isfile(photo):
        pytest.skip("run scripts/data/photos.sh to fetch muybridge_cat.png")
    user = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    proc = subprocess.run([sys.executable, "-c", _THREAD_IMPORTS, photo, str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=600, cwd=env.ROOT, env=user)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"rc": 0, "new": []}


def _png(path, array) -> str:
    from PIL import Image

    Image.fromarray(np.asarray(array)).save(path)
    return str(path)


def _box_mask(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def _animal_mask(data) -> np.ndarray:
    """The synthetic photo's true mask (its map covers the whole photo): layer 0's occupancy."""
    with np.load(os.path.join(data, "synthetic_map.npz"), allow_pickle=False) as z:
        return np.where(z["occupancy"][0] > 0.5, 255, 0).astype(np.uint8)


@pytest.mark.slow
def test_each_photo_of_a_batch_uses_and_reports_its_own_mask(data, tmp_path):
    from PIL import Image

    with Image.open(os.path.join(data, "synthetic.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    true = _animal_mask(data)
    ys, xs = np.nonzero(true)
    photos, mdir, out = tmp_path / "photos", tmp_path / "masks", tmp_path / "out"
    photos.mkdir()
    mdir.mkdir()
    inputs = {n: _png(photos / f"{n}.png", rgb) for n in ("beside", "indir", "plain", "small", "damaged")}
    beside_mask = _png(photos / "beside.mask.png", true)
    _png(photos / "indir.mask.png", _box_mask((h, w), 0, 0, w // 3, h // 3))  # loses to --mask-dir
    grown = _box_mask((h, w), max(int(xs.min()) - 12, 0), max(int(ys.min()) - 12, 0), int(xs.max()) + 13,
                      int(ys.max()) + 13)
    indir_mask = _png(mdir / "indir.mask.png", grown)
    inputs["alpha"] = _png(photos / "alpha.png", np.dstack([rgb, true]))
    _png(photos / "small.mask.png", np.full((10, 12), 255, np.uint8))
    (photos / "damaged.mask.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    # as a shell glob passes them: photos and masks mixed; the masks are not reconstructed
    everything = sorted(str(p) for p in photos.iterdir())
    proc = _dualpm("reconstruct", *everything, "--out", str(out), "--mask-dir", str(mdir),
                   "--model", os.path.join(data, "oracle.onnx"))
    assert proc.returncode == 2, proc.stderr[-3000:]  # small and damaged failed
    assert "beside.mask.png: a mask" in proc.stderr
    assert sorted(n for n in os.listdir(out) if n.endswith(".json")) == sorted(f"{n}.json" for n in inputs)
    s = {n: json.loads((out / f"{n}.json").read_text()) for n in inputs}
    assert s["beside"]["mask"] == {"source": "beside", "path": beside_mask}
    assert s["indir"]["mask"] == {"source": "mask-dir", "path": indir_mask}
    assert s["alpha"]["mask"] == {"source": "alpha", "path": None}
    assert s["plain"]["mask"] == {"source": "none", "path": None}
    for n in ("beside", "indir", "alpha", "plain"):
        assert s[n]["status"] == "ok" and s[n]["points_kept"] >= 1000, (n, s[n])
    # the masks were used, not only named: each crop is the square around that photo's own mask
    for n, m in (("beside", true), ("indir", grown), ("alpha", true)):
        want = preprocess.square_box(preprocess.mask_bbox(m > 127))
        assert s[n]["crop_box"] == pytest.approx(want, abs=0.01), n
    assert s["beside"]["crop_box"] != s["indir"]["crop_box"]
    for n, words in (("small", "is 12x10, the photo is 160x160"), ("damaged", "damaged.mask.png")):
        assert s[n]["status"] == "failed" and words in s[n]["reason"] and "\n" not in s[n]["reason"], s[n]
        assert s[n]["reason"].startswith("mask ") and s[n]["mask"]["source"] == "beside"
        assert not (out / f"{n}.glb").exists()
    assert "4 of 6 photos reconstructed" in proc.stderr


def test_mask_with_several_photos_exits_2_before_any_photo(data, tmp_path):
    photo = os.path.join(data, "synthetic.png")
    mask = _png(tmp_path / "m.png", _animal_mask(data))
    proc = _dualpm("reconstruct", photo, os.path.join(data, "blank.png"), "--out", str(tmp_path / "o"),
                   "--mask", mask)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "2 photos" in line and "--mask-dir" in line and "NAME.mask.png" in line
    assert not (tmp_path / "o").exists()


def test_a_missing_mask_fails_that_photo_with_one_line(data, tmp_path):
    out = tmp_path / "o"
    missing = str(tmp_path / "typo.png")
    proc = _dualpm("reconstruct", os.path.join(data, "synthetic.png"), "--out", str(out), "--mask", missing,
                   "--model", os.path.join(data, "oracle.onnx"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    s = json.loads((out / "synthetic.json").read_text())
    assert s["status"] == "failed" and s["reason"] == f"mask {missing}: no such file"
    assert s["mask"] == {"source": "file", "path": missing}
    assert sorted(os.listdir(out)) == ["synthetic.json"]


def test_blender_background_batch_in_the_installed_extension(data, tmp_path, tmp_path_factory):
    """Blender's own batch path (4.2 LTS, the installed extension) with per-photo masks."""
    photos, mdir = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    mdir.mkdir()
    os.symlink(os.path.join(data, "synthetic.png"), photos / "synthetic.png")
    os.symlink(os.path.join(data, "synthetic.png"), photos / "other.png")
    true = _animal_mask(data)
    beside = _png(photos / "synthetic.mask.png", true)
    indir = _png(mdir / "other.mask.png", _box_mask(true.shape, 10, 20, 150, 140))
    out = str(tmp_path / "out")
    argv = [str(photos / "synthetic.png"), str(photos / "other.png"), "--out", out, "--mask-dir", str(mdir),
            "--model", os.path.join(data, "oracle.onnx")]
    r = env.run("4.2", "headless", data, tmp_path_factory, "--argv", json.dumps(argv))
    assert r["exit_code"] == 0
    assert r["files"] == sorted(f"{n}.{e}" for n in ("other", "synthetic") for e in ("blend", "glb", "json", "png"))
    assert r["blender"].startswith("4.2")
    for name, want in (("synthetic", {"source": "beside", "path": beside}),
                       ("other", {"source": "mask-dir", "path": indir})):
        with open(os.path.join(out, f"{name}.json")) as f:
            assert json.load(f)["mask"] == want


@pytest.mark.slow
def test_the_readme_example_reconstructs_with_the_shipped_model(tmp_path):
    """README's first command: the whole cat (scripts/data/photos.sh) through the default model."""
    photo = os.path.join(env.ROOT, ".cache", "photos", "muybridge_cat.png")
    if not os.path.isfile(photo):
        pytest.skip("run scripts/data/photos.sh to fetch muybridge_cat.png")
    proc = _dualpm("reconstruct", photo, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "muybridge_cat.json").read_text())
    assert s["status"] == "ok" and s["photo_size"] == [166, 109] and s["mask"]["source"] == "none"
    assert s["points_kept"] >= 1000 and s["bones_fitted"] >= 20
    assert sorted(os.listdir(tmp_path)) == [f"muybridge_cat.{e}" for e in ("blend", "glb", "json", "png")]


_OPEN_BLEND = r"""
import json, sys
import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view

bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
r = scene.render
w, h = r.resolution_x, r.resolution_y
cam = scene.camera
bg = cam.data.background_images[0].image
surface = next(o for o in bpy.data.objects if o.get("dualpm_role") == "surface")
scene.frame_set(1)  # the photo's pose
ev = surface.evaluated_get(bpy.context.evaluated_depsgraph_get())
uv = np.array([tuple(world_to_camera_view(scene, cam, ev.matrix_world @ v.co))[:2] for v in ev.data.vertices])
px = np.stack([uv[:, 0] * w, (1 - uv[:, 1]) * h], 1)
print(json.dumps({"resolution": [w, h], "background": [bg.name, list(bg.size), bg.packed_file is not None],
                  "rig_box": [float(px[:, 0].min()), float(px[:, 1].min()), float(px[:, 0].max()),
                              float(px[:, 1].max())]}))
"""


def s_upright_box(out) -> list:
    return json.loads((out / "upright.json").read_text())["animal_box"]


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.mark.slow
def test_a_phone_photo_is_turned_upright_and_a_large_one_shrunk_with_the_camera_kept(tmp_path):
    """A photo stored sideways with its EXIF orientation is reconstructed upright, as the upright
    photo is, with an upright camera background; a 2158 x 1417 photo is worked on at half size and
    its camera made for the full photo: the rig lands on the animal at either size. An AVIF
    (which Pillow reads and Blender does not) works; a JPEG cut short and an iPhone's HEIC fail
    with one line each and leave nothing but their JSON."""
    from PIL import Image

    photo = os.path.join(env.ROOT, ".cache", "photos", "muybridge_cat.png")
    if not os.path.isfile(photo):
        pytest.skip("run scripts/data/photos.sh to fetch muybridge_cat.png")
    with Image.open(photo) as im:
        cat = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter counter-clockwise: viewers turn it clockwise
    cat.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=98)
    cat.save(tmp_path / "upright.jpg", quality=98)
    cat.resize((166 * 13, 109 * 13), Image.Resampling.NEAREST).save(tmp_path / "large.png")
    cat.resize((166 * 13, 109 * 13), Image.Resampling.NEAREST).save(tmp_path / "large_jpeg.jpg", quality=95)
    data = (tmp_path / "upright.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # Blender would decode the top half
    # Masks beside the photos, drawn upright as an editor shows the photo: a box on the cat.
    (tmp_path / "masked.jpg").write_bytes((tmp_path / "sideways.jpg").read_bytes())
    box = np.zeros((109, 166), np.uint8)
    box[20:100, 10:150] = 255
    Image.fromarray(box).save(tmp_path / "masked.mask.png")
    (tmp_path / "large_masked.png").write_bytes((tmp_path / "large.png").read_bytes())
    Image.fromarray(np.kron(box, np.ones((13, 13), np.uint8))).save(tmp_path / "large_masked.mask.png")
    # AVIF: Pillow reads it, Blender does not; HEIC: neither (an iPhone's default), a one-line hint.
    from PIL import features

    avif = features.check("avif")  # Pillow's wheels have carried AVIF since 11.3
    if avif:
        cat.save(tmp_path / "modern.avif")
    (tmp_path / "iphone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    out = tmp_path / "out"
    photos = ("upright.jpg", "sideways.jpg", "large.png", "large_jpeg.jpg", "cut.jpg", "masked.jpg", "large_masked.png",
              *(("modern.avif",) if avif else ()), "iphone.heic")
    proc = _dualpm("reconstruct", *(str(tmp_path / f) for f in photos), "--out", str(out), "--motion", "none")
    assert proc.returncode == 2, proc.stderr[-3000:]  # two photos failed: the cut JPEG and the HEIC
    assert "sideways: ok" in proc.stderr and "turned upright (EXIF orientation 6)" in proc.stderr
    assert "worked on at 1/2 of its 2158x1417" in proc.stderr
    cut = json.loads((out / "cut.json").read_text())
    assert cut["status"] == "failed" and cut["reason"] == ("cut.jpg: damaged image: the JPEG file is cut short "
                                                           "(an interrupted copy or download?)")
    heic = json.loads((out / "iphone.json").read_text())
    assert heic["status"] == "failed" and heic["reason"].startswith("iphone.heic: HEIC/HEIF (an iPhone's default")
    ok = ("upright", "sideways", "large", "large_jpeg", "masked", "large_masked", *(("modern",) if avif else ()))
    assert sorted(os.listdir(out)) == sorted([f"{n}.{e}" for n in ok for e in ("blend", "glb", "json", "png")]
                                             + ["cut.json", "iphone.json"])
    if avif:
        modern = json.loads((out / "modern.json").read_text())
        assert modern["status"] == "ok" and modern["photo_size"] == [166, 109]
        assert np.allclose(modern["animal_box"], s_upright_box(out), atol=3)
    # The masks were used as drawn: upright beside the sideways photo, shrunk with the large one.
    for name, scale in (("masked", 1), ("large_masked", 13 / 2)):
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["mask"]["source"] == "beside" and summary["mask_source"] == "user"
        assert np.allclose(summary["animal_box"], np.array([10, 20, 150, 100]) * scale, atol=1)
    s = {n: json.loads((out / f"{n}.json").read_text()) for n in ("upright", "sideways", "large")}
    assert s["upright"]["intake"] == {"exif_orientation": 1, "upright_size": [166, 109], "work_factor": 1}
    assert s["sideways"]["intake"] == {"exif_orientation": 6, "upright_size": [166, 109], "work_factor": 1}
    assert s["sideways"]["photo_size"] == [166, 109]
    # Turned upright, the sideways photo is the upright one to within JPEG's 8 x 8 blocks.
    assert np.allclose(s["sideways"]["animal_box"], s["upright"]["animal_box"], atol=3)
    assert s["large"]["intake"] == {"exif_orientation": 1, "upright_size": [2158, 1417], "work_factor": 2}
    assert s["large"]["photo_size"] == [1079, 708] and s["large"]["rig_iou"] > 0.5
    # A large JPEG is decoded at half size by libjpeg itself (intake.shrunk_jpeg): the same sizes.
    large_jpeg = json.loads((out / "large_jpeg.json").read_text())
    assert large_jpeg["intake"] == s["large"]["intake"] and large_jpeg["photo_size"] == [1079, 708]
    assert large_jpeg["rig_iou"] > 0.5
    for name, size, packed, factor in (("sideways", [166, 109], True, 1), ("large", [2158, 1417], True, 2),
                                       ("large_jpeg", [2158, 1417], True, 2)):
        s.setdefault(name, json.loads((out / f"{name}.json").read_text()))
        r = subprocess.run([sys.executable, "-c", _OPEN_BLEND, str(out / f"{name}.blend")], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["resolution"] == size and got["background"][1] == size and got["background"][2] == packed
        if name == "sideways":
            assert got["background"][0].endswith("upright")
        animal = [factor * v for v in s[name]["animal_box"]]
        assert _box_iou(got["rig_box"], animal) > 0.6, (got["rig_box"], animal)
