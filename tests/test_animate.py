"""`dualpm animate` end to end: a real video (pan and zoom over Muybridge's cat, H.264 written
with PyAV), the shipped predictor in ONNX Runtime, the clip fit, real bpy 5.0 writing the .blend;
the BVH round trip through Blender's own importer and dualpm_addon.bvh; and bad input through the
command: one line, exit 2, no output that looks complete."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dualpm_addon import bvh, gltf_write
from dualpm_addon.video import decode

from . import video_fixtures as vf
from .conftest import ROOT

pytest.importorskip("av")
MODEL = os.path.join(ROOT, "assets", "dualpm.onnx")
pytestmark = pytest.mark.skipif(not (os.path.isfile(vf.CAT) and os.path.isfile(MODEL)),
                                reason="run scripts/setup.sh (photos, model)")

DUALPM = os.path.join(ROOT, ".venv", "bin", "dualpm")
FRAMES = 5
OUTPUT_EXTS = ("blend", "clip.mp4", "glb", "bvh", "mp4", "json")


def _dualpm(*args, timeout=300):
    return subprocess.run([DUALPM, "animate", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def animated(tmp_path_factory):
    d = tmp_path_factory.mktemp("animate")
    video = vf.write_video(str(d / "cat.mp4"), vf.pan_zoom(vf.read_rgb(vf.CAT), FRAMES, (120, 180)), 12)
    out = d / "out"
    out.mkdir()
    (out / "cat.glb").write_bytes(b"stale output of an earlier run")
    proc = _dualpm(video, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_writes_every_output_and_the_figures(animated):
    out, proc = animated
    names = sorted(os.listdir(out))
    assert names == sorted(f"cat.{e}" for e in OUTPUT_EXTS), names
    s = json.loads((out / "cat.json").read_text())
    assert s["status"] == "ok" and s["video"]["frames"] == FRAMES and s["video"]["fps"] == 12
    assert len(s["per_frame"]) == FRAMES and s["frames_with_animal"] >= FRAMES - 1
    row = s["per_frame"][0]
    assert {"tracked", "bridged", "redetected", "rig_iou", "crop_box", "source_frame", "source_time_s"} <= set(row)
    assert s["fit"]["frames_tracked"] + s["fit"]["frames_bridged"] == FRAMES
    # a re-detected frame is a tracked one
    assert s["fit"]["frames_redetected"] == sum(r["redetected"] for r in s["per_frame"])
    assert all(r["tracked"] for r in s["per_frame"] if r["redetected"])
    speed = s["speed"]
    assert speed["frames"] == FRAMES and speed["frames_per_second"] > 0
    assert speed["real_time_factor"] == pytest.approx(FRAMES / 12 / speed["seconds"], abs=1e-3)  # rounded to 3
    assert {"decode", "inference", "fit", "write_blend", "write_glb", "write_bvh", "write_preview",
            "total"} <= set(s["timings_s"])
    assert s["inference"]["crops"] >= FRAMES  # one crop per frame at least, batched
    assert "real time" in proc.stderr.splitlines()[-1]


def test_preview_and_background_videos(animated):
    out, _ = animated
    clip = decode.read(str(out / "cat.clip.mp4"))
    assert len(clip) == FRAMES and clip.size == (120, 180) and clip.fps == pytest.approx(12)
    preview = decode.read(str(out / "cat.mp4"))
    assert len(preview) == FRAMES and preview.size == (120, 2 * 180 + 4)
    # Left half: the video itself; right half: the same frame with the rig drawn over it.
    left, right = preview.frames[:, :, :180].astype(int), preview.frames[:, :, 184:].astype(int)
    assert np.abs(left - clip.frames.astype(int)).mean() < 8
    assert np.abs(right - left).mean() > 3


def test_glb_holds_the_rig_the_surface_and_the_motion(animated):
    out, _ = animated
    gltf, blob = gltf_write.read_glb((out / "cat.glb").read_bytes())
    assert len(gltf["skins"][0]["joints"]) == 46 and gltf["meshes"]
    anim = gltf["animations"][0]
    times = gltf_write.accessor_array(gltf, blob, anim["samplers"][0]["input"])
    np.testing.assert_allclose(times.ravel(), np.arange(FRAMES) / 12.0, atol=1e-6)


def _blend_joints(path):
    """The .blend's action evaluated by Blender: bone heads per frame, in world space."""
    code = (
        "import sys, json, numpy as np, bpy\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from operators import video, provenance\n"
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[2])\n"
        "arm = next(o for o in bpy.data.objects if provenance.role(o) == 'armature')\n"
        "cam = next(o for o in bpy.data.objects if provenance.role(o) == 'camera')\n"
        "names = [b.name for b in arm.data.bones]\n"
        "n = int(bpy.context.scene.frame_end)\n"
        "pos = video.action_joint_positions(bpy.context, arm, names, n)\n"
        "bg = cam.data.background_images[0]\n"
        "np.savez(sys.argv[3], names=np.array(names), pos=pos, frame_end=n, fps=bpy.context.scene.render.fps,\n"
        "         bg=bg.image.filepath, bg_source=bg.image.source, bg_frames=bg.image_user.frame_duration)\n")
    out = str(path) + ".joints.npz"
    proc = subprocess.run([sys.executable, "-c", code, ROOT, str(path), out], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_bvh_round_trip_matches_the_blend_action(animated, tmp_path):
    out, _ = animated
    blend = _blend_joints(out / "cat.blend")
    assert int(blend["frame_end"]) == FRAMES and int(blend["fps"]) == 12
    assert str(blend["bg"]) == "//cat.clip.mp4" and str(blend["bg_source"]) == "MOVIE"
    assert int(blend["bg_frames"]) == FRAMES
    names = [str(n) for n in blend["names"]]
    pos_blend = blend["pos"]
    size = float(np.ptp(pos_blend.reshape(-1, 3), axis=0).max())

    motion = bvh.read(str(out / "cat.bvh"))
    assert motion.frame_time == pytest.approx(1 / 12) and len(motion.joint_names) == 46
    ours = motion.world_positions()
    idx = [list(motion.joint_names).index(n) for n in names]
    err_ours = np.abs(ours[:, idx] - pos_blend).max() / size
    assert err_ours <= 1e-4, err_ours

    npz = tmp_path / "imported.npz"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "bpy_bvh_import.py"), str(npz),
                           str(out / "cat.bvh")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(npz, allow_pickle=False) as z:
        imp_names, frames, imp = [str(n) for n in z["0_names"]], z["0_frames"], z["0_pos"]
    assert list(frames) == list(range(FRAMES))
    idx = [imp_names.index(n) for n in names]
    err_blender = np.abs(imp[:, idx] - pos_blend).max() / size
    assert err_blender <= 1e-4, err_blender


# -- bad input through the command -------------------------------------------------------------------


def _fails_cleanly(proc, out, name, text):
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dualpm animate: error: ") and text in last, last
    left = sorted(os.listdir(out))
    assert left == [f"{name}.json"], left  # only the record of the failure
    s = json.loads((out / f"{name}.json").read_text())
    assert s["status"] == "failed" and text in s["reason"]


def test_no_frame_shows_an_animal(tmp_path):
    video = vf.write_video(str(tmp_path / "hills.mp4"), vf.landscapes(6), 12)
    out = tmp_path / "out"
    out.mkdir()
    for ext in ("blend", "bvh", "mp4"):  # stale files of an earlier, successful run
        (out / f"hills.{ext}").write_bytes(b"old")
    _fails_cleanly(_dualpm(video, "--out", str(out)), out, "hills", "no frame of the clip shows an animal")


def test_corrupt_video_and_bad_arguments(tmp_path):
    bad = tmp_path / "broken.mov"
    bad.write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 40)
    out = tmp_path / "out"
    _fails_cleanly(_dualpm(str(bad), "--out", str(out)), out, "broken", "corrupt")
    proc = _dualpm(str(bad), "--out", str(out), "--fps", "0")
    assert proc.returncode == 2 and "--fps 0" in proc.stderr.strip().splitlines()[-1]


def test_a_one_frame_4k_clip_is_a_still(tmp_path):
    from PIL import Image

    big = np.asarray(Image.fromarray(vf.read_rgb(vf.CAT)).resize((3840, 2160), Image.Resampling.BILINEAR))
    video = vf.write_video(str(tmp_path / "still.mp4"), big[None], 24)
    out = tmp_path / "out"
    proc = _dualpm(video, "--out", str(out), "--bvh-out", str(tmp_path / "motion.bvh"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "still.bvh").exists()  # --bvh-out puts it there instead
    s = json.loads((out / "still.json").read_text())
    assert s["outputs"]["bvh"] == "motion.bvh"
    assert s["video"]["frames"] == 1 and s["video"]["decoded_size"] == [640, 360]
    assert s["video"]["source_size"] == [3840, 2160]
    assert bvh.read(str(tmp_path / "motion.bvh")).world_positions().shape == (1, 46, 3)
