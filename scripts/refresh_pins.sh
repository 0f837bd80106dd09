#!/usr/bin/env bash
# Refresh the pinned environments: requirements.in and requirements-blender42.in name what the
# project uses (top level, loosely, with the few exact versions that matter); this resolves each
# in a throw-away virtual environment and writes every installed package at its exact version to
# requirements.txt and requirements-blender42.txt, which scripts/setup.sh installs.
#   bash scripts/refresh_pins.sh
# Then review the diff, run the tests, and make scripts/data/wheels.sh fetch the same
# onnxruntime, scipy and pillow versions (tests/test_pins.py checks that they agree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
for pair in "requirements.in requirements.txt" "requirements-blender42.in requirements-blender42.txt"; do
  read -r src dst <<<"$pair"
  tmp=$(mktemp -d)
  "$PY" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q --upgrade pip
  "$tmp/venv/bin/python" -m pip install -q -r "$src"
  {
    echo "# Exact pins of everything $src installs, written by scripts/refresh_pins.sh; edit $src, not this."
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^#'
  } > "$dst.partial"
  mv "$dst.partial" "$dst"
  rm -rf "$tmp"
  echo "refresh_pins: $dst ($(grep -vc '^#' "$dst") packages)" >&2
done
