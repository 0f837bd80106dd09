"""The "Animate from Video" button in real Blender (bpy 5.0.1, and 4.2 LTS for the synchronous
path): tests/video_operator_scenario.py in a fresh bpy process per version."""

import json
import os
import subprocess

import pytest

from . import video_fixtures as vf
from .conftest import ROOT

pytest.importorskip("av")
MODEL = os.path.join(ROOT, "assets", "dualpm.onnx")
pytestmark = pytest.mark.skipif(not (os.path.isfile(vf.CAT) and os.path.isfile(MODEL)),
                                reason="run scripts/setup.sh (photos, model)")

FRAMES = 3
PYTHONS = {"5.0": os.path.join(ROOT, ".venv", "bin", "python"), "4.2": os.path.join(ROOT, ".venv42", "bin", "python")}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("video-op")
    video = vf.write_video(str(d / "cat.mp4"), vf.pan_zoom(vf.read_rgb(vf.CAT), FRAMES, (120, 180)), 12)
    broken = d / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x07" * 3000)
    return video, str(broken)


def _scenario(version, videos, tmp_path, *extra):
    python = PYTHONS[version]
    if not os.path.isfile(python):
        pytest.skip(f"{python} is missing (scripts/setup.sh makes it)")
    out = tmp_path / "report.json"
    # Blender's own user folder in tmp: enabling the extension installs its wheels into the user
    # folder's extensions/.local, which every later bpy import puts on sys.path (it was the real
    # ~/.config/blender, shared with other checkouts and runs).
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender_user"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([python, os.path.join(ROOT, "tests", "video_operator_scenario.py"), str(out), *videos,
                           *extra], capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _check_scene(info):
    assert info["roles"] == ["armature", "camera", "surface"] and info["bones"] == 46
    assert info["action_range"] == [1.0, float(FRAMES)] and info["scene_range"] == [1, FRAMES]
    assert info["fps"] == pytest.approx(12.0)
    assert info["background"]["source"] == "MOVIE" and info["background"]["frames"] == FRAMES
    assert info["surface_modifiers"] == ["ARMATURE"]


@pytest.mark.slow
def test_button_in_blender_5_modal_progress_and_cancel(videos, tmp_path):
    r = _scenario("5.0", videos, tmp_path, "--modal")
    sync = r["sync"]
    assert sync["result"] == ["FINISHED"] and len(sync["collections"]) == 1
    _check_scene(sync["info"])
    assert sync["info"]["slotted"]
    broken = sync["broken"]
    assert broken["raised"] and "broken.mp4" in broken["text"] and "corrupt" in broken["text"]
    assert "\n" not in broken["panel_message"] and "corrupt" in broken["panel_message"]
    assert broken["new_collections"] == []
    m = r["modal"]
    assert m["worst_tick_s"] < 0.05 and m["ticks"] > 2 and "inference" in m["stages"]
    assert m["progress_sorted"] and not m["changed_before_last_tick"] and not m["poll_while_running"]
    _check_scene(m["info"])
    assert m["cancel_ended"] and m["cancel_s"] < 10 and m["cancel_error"] == "Cancelled"
    assert m["after_cancel_new_collections"] == [] and not m["running_after_cancel"]


@pytest.mark.slow
@pytest.mark.blender42
def test_button_and_command_in_blender_4_2(videos, tmp_path):
    out = tmp_path / "out"
    r = _scenario("4.2", videos, tmp_path, "--headless", str(out))
    assert r["blender"].startswith("4.2")
    sync = r["sync"]
    assert sync["result"] == ["FINISHED"]
    _check_scene(sync["info"])
    assert not sync["info"]["slotted"]
    assert sync["broken"]["raised"] and sync["broken"]["new_collections"] == []
    # The command inside Blender 4.2 (blender -b --python-expr ... animate_headless.main([...])).
    assert r["headless"] == {"exit": 0, "broken_exit": 2}
    assert sorted(os.listdir(out)) == ["broken.json"] + sorted(f"cat.{e}" for e in ("blend", "bvh", "clip.mp4",
                                                                                  "glb", "json"))
    s = json.loads((out / "cat.json").read_text())
    assert s["status"] == "ok" and len(s["per_frame"]) == FRAMES
    assert json.loads((out / "broken.json").read_text())["status"] == "failed"
