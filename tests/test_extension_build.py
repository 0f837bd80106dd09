"""The extension as Blender sees it: the manifest passes Blender's own validator (bl_pkg's
command line inside the bpy wheel), and the built zip installs and enables in bpy."""

import os
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT

pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_extension.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_validator_accepts_the_manifest(built_zip):
    from scripts.build_extension import blender_ext_tool

    proc = subprocess.run([sys.executable, blender_ext_tool(), "validate", built_zip], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zip_holds_the_extension_and_no_development_files(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "assets/template_horse.npz" in names
    assert "assets/u2netp.onnx" in names  # ignored by git, fetched by setup, shipped
    assert any(n.startswith("dualpm_addon/") for n in names)
    for banned in ("training/", "tests/", "benchmarks/", "scripts/", ".cache/", ".venv/", "docs/"):
        assert not any(n.startswith(banned) for n in names), banned


INSTALL = """
import os, sys
import bpy
r = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
assert r == {"FINISHED"}, r
enabled = [m for m in bpy.context.preferences.addons.keys() if m.endswith(".dualpm")]
assert enabled, list(bpy.context.preferences.addons.keys())
print("ENABLED", enabled[0])
"""


BLENDERS = {"5.0": sys.executable, "4.2": os.path.join(ROOT, ".venv42", "bin", "python")}


@pytest.mark.parametrize("version", sorted(BLENDERS))
def test_zip_installs_and_enables_in_blender(built_zip, tmp_path, version):
    python = BLENDERS[version]
    if not os.path.exists(python):
        pytest.fail(f"{python} is missing: run `bash scripts/setup.sh` (it makes the 4.2 LTS environment)")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender_user"))
    proc = subprocess.run([python, "-c", INSTALL, built_zip], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ENABLED bl_ext.user_default.dualpm" in proc.stdout
