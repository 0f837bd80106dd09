#!/usr/bin/env bash
# Test photos for image decoding, cropping and the inference server, fetched by package name:
#   scikit-image 0.25.2 wheel: skimage/data/chelsea.png (a real cat photo, CC0),
#                              skimage/data/horse.png (a horse silhouette, CC0)
#   imgaug 0.4.0 wheel:        imgaug/quokka.jpg and imgaug/quokka_annotations.json (a real photo
#                              with an outline polygon: a true mask; tests only, never shipped)
# Only those files are read out of the wheels; neither library is installed.
# Idempotent: files whose sha256 already matches are kept. Run from the repo root with .venv present.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.cache/photos
PY=.venv/bin/python
fail() { printf 'photos.sh failed: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || fail ".venv/bin/python is missing (run scripts/setup.sh first)"
mkdir -p "$OUT"

# name  sha256  wheel-member
FILES="chelsea.png 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb skimage/data/chelsea.png
horse.png c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455 skimage/data/horse.png
quokka.jpg bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e imgaug/quokka.jpg
quokka_annotations.json ac105c75c464fb5174d9a3f109a6440f8a3fdc6b52dfde4b7610c4ddc47471e1 imgaug/quokka_annotations.json"

have() { [ -f "$OUT/$1" ] && [ "$(sha256sum "$OUT/$1" | cut -d' ' -f1)" = "$2" ]; }

missing=0
while read -r name sum _; do have "$name" "$sum" || missing=1; done <<<"$FILES"
if [ "$missing" = 0 ]; then echo "photos: up to date in $OUT" >&2; exit 0; fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Fixed platform and Python so the same wheel (and so the same bytes) come whatever the host is.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 scikit-image==0.25.2 -d "$TMP" \
  || fail "pip could not download scikit-image==0.25.2 (is PyPI reachable?)"
"$PY" -m pip download -q --no-deps --only-binary=:all: imgaug==0.4.0 -d "$TMP" \
  || fail "pip could not download imgaug==0.4.0 (is PyPI reachable?)"

FILES="$FILES" "$PY" - "$TMP" "$OUT" <<'PY'
import glob, hashlib, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
for line in os.environ["FILES"].splitlines():
    name, want, member = line.split()
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            if member in z.namelist():
                data = z.read(member)
                break
    else:
        sys.exit(f"photos.sh failed: {member} is in none of the downloaded wheels")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"photos.sh failed: {member} has sha256 {got}, expected {want}")
    with open(os.path.join(out, name + ".partial"), "wb") as f:
        f.write(data)
    os.replace(os.path.join(out, name + ".partial"), os.path.join(out, name))
    print(f"photos: {name} ({len(data)} bytes)", file=sys.stderr)
PY
