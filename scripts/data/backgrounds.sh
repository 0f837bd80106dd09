#!/usr/bin/env bash
# Landscape photos without animals, as training backgrounds for `dualpm synth`, from Debian
# wallpaper packages fetched by name with apt (apt-get download; nothing is installed):
#   plasma-workspace-wallpapers  9 photos (KDE; each wallpaper's metadata.json names its author and
#                                licence, LGPLv3; the package's copyright file says GPL-2+)
#   mate-backgrounds             10 nature photos (GPL-2+, authors in the copyright file)
#   lomiri-wallpapers-16.04      6 landscape photos (CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0 per file)
# Chosen by looking at every picture: landscapes, plants, water, sky; none shows an animal (the
# packages' ladybird, butterfly, dragonfly, bird, goldfish and dog pictures are left out).
# Each picture is stored as .cache/backgrounds/<package>/<name>.jpg, at most 1024 pixels on its
# longer side (the synthesizer crops 160-pixel views), with the package's copyright file next to
# it, and one line per picture in .cache/backgrounds/LICENSES.txt (file, package, version,
# author, licence). Idempotent: nothing is fetched when every picture is present.
# Run from the repo root with .venv present (Pillow resizes the pictures).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.cache/backgrounds
PY=.venv/bin/python
fail() { printf 'backgrounds.sh failed: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || fail ".venv/bin/python is missing (run scripts/setup.sh first)"
command -v apt-get >/dev/null || fail "apt-get is needed to fetch the Debian wallpaper packages"
command -v dpkg-deb >/dev/null || fail "dpkg-deb is needed to unpack the Debian wallpaper packages"

# package  path inside the package  name  author  licence (lomiri: from its copyright file)
SELECTION="plasma-workspace-wallpapers usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg BytheWater - -
plasma-workspace-wallpapers usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg ColdRipple - -
plasma-workspace-wallpapers usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg DarkestHour - -
plasma-workspace-wallpapers usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg EveningGlow - -
plasma-workspace-wallpapers usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg FallenLeaf - -
plasma-workspace-wallpapers usr/share/wallpapers/Path/contents/images/2560x1600.jpg Path - -
plasma-workspace-wallpapers usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg summer_1am - -
plasma-workspace-wallpapers usr/share/wallpapers/Kite/contents/images/2560x1600.jpg Kite - -
plasma-workspace-wallpapers usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg OneStandsOut - -
mate-backgrounds usr/share/backgrounds/mate/nature/Dune.jpg Dune Marco_Cogoni,_Hylke_Bons GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/GreenMeadow.jpg GreenMeadow Timothy_Schellhase,_Lapo_Calamandrei GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/Storm.jpg Storm Sergey_Nazarov GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/Wood.jpg Wood Jean-Francois_Fortin_Tam GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/Blinds.jpg Blinds Lennart_Poettering,_Andrea_Cimitan GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/RainDrops.jpg RainDrops blackcombwhistler07 GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/Garden.jpg Garden Charles_Barbin GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/FreshFlower.jpg FreshFlower Jens_Ansorg GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/YellowFlower.jpg YellowFlower Charles_Barbin GPL-2+
mate-backgrounds usr/share/backgrounds/mate/nature/Aqua.jpg Aqua Charles_Barbin GPL-2+
lomiri-wallpapers-16.04 usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg aitzgorri Aitzol_Berasategi CC-BY-4.0
lomiri-wallpapers-16.04 usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg life Aitzol_Berasategi CC-BY-4.0
lomiri-wallpapers-16.04 usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg picosdeeuropa Aitzol_Berasategi CC-BY-4.0
lomiri-wallpapers-16.04 usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg sunset Aitzol_Berasategi CC-BY-4.0
lomiri-wallpapers-16.04 usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg seeding Clemens_Engelhardt CC0-1.0
lomiri-wallpapers-16.04 usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg Bridge Sander_Klootwijk CC-BY-SA-4.0"

missing=0
while read -r pkg _ name _ _; do [ -s "$OUT/$pkg/$name.jpg" ] || missing=1; done <<<"$SELECTION"
if [ "$missing" = 0 ] && [ -s "$OUT/LICENSES.txt" ]; then
  echo "backgrounds: $(wc -l <<<"$SELECTION") pictures up to date in $OUT" >&2
  exit 0
fi

PACKAGES=$(cut -d' ' -f1 <<<"$SELECTION" | sort -u)
# apt needs its package lists once; refresh them only when a package is unknown.
for pkg in $PACKAGES; do
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    echo "backgrounds: apt does not know $pkg; running apt-get update once" >&2
    apt-get update -qq || fail "apt-get update failed (needs root and access to the Debian mirror)"
    break
  fi
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
(cd "$TMP" && apt-get download -q $PACKAGES >/dev/null 2>&1) \
  || fail "apt-get download $PACKAGES failed (is the Debian mirror reachable?)"

LIC="$OUT/LICENSES.txt.partial"
printf '# file\tpackage\tversion\tauthor\tlicence\n' >"$LIC"
for pkg in $PACKAGES; do
  deb=$(ls "$TMP/${pkg}"_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || fail "apt-get did not produce a .deb for $pkg"
  version=$(dpkg-deb -f "$deb" Version)
  mkdir -p "$TMP/x/$pkg" "$OUT/$pkg"
  members=$(awk -v p="$pkg" '$1 == p {print "./" $2; n=split($2, a, "/"); if (p ~ /^plasma/) print "./" a[1] "/" a[2] "/" a[3] "/" a[4] "/metadata.json"}' <<<"$SELECTION")
  # Extract only what is needed (plus the copyright file), not the whole package.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TMP/x/$pkg" $members "./usr/share/doc/$pkg/copyright" \
    || fail "$pkg $version lacks an expected file"
  cp "$TMP/x/$pkg/usr/share/doc/$pkg/copyright" "$OUT/$pkg/copyright"
  while read -r p path name author licence; do
    [ "$p" = "$pkg" ] || continue
    if [ "$author" = "-" ]; then  # plasma: the wallpaper's own metadata names author and licence
      meta="$TMP/x/$pkg/$(cut -d/ -f1-4 <<<"$path")/metadata.json"
      read -r author licence < <("$PY" -c 'import json, sys
m = json.load(open(sys.argv[1]))["KPlugin"]
print(",_".join(a["Name"].replace(" ", "_") for a in m.get("Authors", [])) or "unknown", m.get("License", "unknown"))' "$meta") \
        || fail "cannot read $meta"
      licence="${licence}_(wallpaper_metadata;_package_copyright:_GPL-2+)"
    fi
    "$PY" - "$TMP/x/$pkg/$path" "$OUT/$pkg/$name.jpg" <<'EOF' || fail "cannot convert $path from $pkg"
import os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
with Image.open(src) as im:
    im = im.convert("RGB")
    im.thumbnail((1024, 1024), Image.LANCZOS)
    im.save(dst + ".partial", format="JPEG", quality=92)
os.replace(dst + ".partial", dst)
EOF
    printf '%s\t%s\t%s\t%s\t%s\n' "$pkg/$name.jpg" "$pkg" "$version" "${author//_/ }" "${licence//_/ }" >>"$LIC"
  done <<<"$SELECTION"
  echo "backgrounds: $pkg $version" >&2
done
mv "$LIC" "$OUT/LICENSES.txt"
echo "backgrounds: $(wc -l <<<"$SELECTION") pictures in $OUT (licences in $OUT/LICENSES.txt)" >&2
