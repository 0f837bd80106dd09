#!/usr/bin/env bash
# Wheels the extension ships inside its zip (blender_manifest.toml `wheels`), so that a fresh
# Blender 4.2 LTS to 5.0 with only the extension installed reconstructs on the CPU: ONNX Runtime
# (the model server and the in-process runner), SciPy (the skeleton fit), Pillow (photo
# resampling, EXIF focal length) and PyAV (video decoding and the preview video of Animate from
# video; its wheel bundles FFmpeg and needs no numpy to install). Blender brings numpy itself
# (1.24 in 4.2, 1.26 in 5.0), so none is shipped; the versions below all work with numpy >= 1.23.5. ONNX Runtime's own pip
# dependencies (coloredlogs, flatbuffers, protobuf, sympy, packaging) are only used by its
# tools, not by inference, and are left out.
#
# Platform covered: linux-x64 (CPython 3.11, manylinux). Fetched by name from PyPI with pip into
# wheels/ (ignored by git; scripts/build_extension.py copies it into the build), each checked
# against its sha256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=wheels
mkdir -p "$DEST"

# file name | sha256 | requirement
WHEELS=(
  "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl|5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f|onnxruntime==1.31.1"
  "scipy-1.15.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl|39cb9c62e471b1bb3750066ecc3a3f3052b37751c7c3dfd0fd7e48900ed52982|scipy==1.15.3"
  "pillow-13.0.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|a625df9a2a5597fa5e5266e01aefc82604bb85d291e3547981e863560d75da6c|pillow==13.0.0"
  "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl|8a032e8d8ebc73dec079364b9b4a6837638a2d106e8472314e685ffbf163e700|av==18.1.0"
)

for entry in "${WHEELS[@]}"; do
  IFS='|' read -r file sha req <<< "$entry"
  path="$DEST/$file"
  if [ -f "$path" ] && [ "$(sha256sum "$path" | cut -d' ' -f1)" = "$sha" ]; then
    continue
  fi
  rm -f "$path"
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST" "$req" \
    || { echo "wheels.sh: downloading $req failed" >&2; exit 1; }
  [ -f "$path" ] || { echo "wheels.sh: pip did not produce $file for $req" >&2; exit 1; }
  got=$(sha256sum "$path" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "wheels.sh: $file has sha256 $got, expected $sha" >&2; rm -f "$path"; exit 1; }
done
echo "wheels: $(ls "$DEST"/*.whl | wc -l) wheels in $DEST" >&2
