"""Build the Blender extension zip with Blender's own tool (bl_pkg's blender_ext.py in the bpy wheel).

    python scripts/build_extension.py [--out DIR] [--validate-only]

The build starts from a staging copy holding the files git tracks plus what setup fetched and
the extension ships though git ignores it: the wheels (`wheels/`) and the segmenter
(`assets/u2netp.onnx`, scripts/data/segmenter.sh; the build fails without it). So work in
progress never leaks into a release; the manifest's [build] paths_exclude_pattern then keeps
training, tests and development files out.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FETCHED_ASSETS = ("assets/u2netp.onnx",)  # ignored by git, shipped: setup's scripts/data/segmenter.sh


def blender_ext_tool() -> str:
    """Path of Blender's extension command line inside the installed bpy wheel."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("bpy")  # the wheel's bpy/__init__.so, without starting Blender
    if spec is None or not spec.origin:
        sys.exit("error: bpy is not installed in this environment (run scripts/setup.sh)")
    base = os.path.dirname(spec.origin)
    hits = glob.glob(os.path.join(base, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if not hits:
        sys.exit("error: bpy has no bl_pkg/cli/blender_ext.py; is the bpy wheel installed?")
    return hits[0]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.exists(os.path.join(ROOT, p))]


def stage(dest: str) -> None:
    for rel in tracked_files():
        src = os.path.join(ROOT, rel)
        dst = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    wheels = os.path.join(ROOT, "wheels")
    if os.path.isdir(wheels):
        shutil.copytree(wheels, os.path.join(dest, "wheels"), dirs_exist_ok=True)
    for rel in FETCHED_ASSETS:
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            sys.exit(f"error: {rel} is missing, and the extension ships it (run scripts/setup.sh)")
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def run_tool(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, blender_ext_tool(), *args], capture_output=True, text=True)
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"error: blender_ext {args[0]} failed (exit {proc.returncode})")


def build(out_dir: str, validate_only: bool = False) -> str | None:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dualpm-ext-") as tmp:
        stage(tmp)
        run_tool(["validate", tmp])
        if validate_only:
            return None
        run_tool(["build", "--source-dir", tmp, "--output-dir", os.path.abspath(out_dir)])
    zips = sorted(glob.glob(os.path.join(out_dir, "dualpm-*.zip")), key=os.path.getmtime)
    return zips[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"))
    ap.add_argument("--validate-only", action="store_true")
    args = ap.parse_args()
    path = build(args.out, args.validate_only)
    if path:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
