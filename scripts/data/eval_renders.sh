#!/usr/bin/env bash
# The held-out evaluation renders of assets/MODEL_CARD.md, made here (not fetched): `dualpm eval`,
# bench_photo_fit.py and bench_character_shape.py read them. 60 renders of the two held-out clips
# (Gallop_Jump, Idle_HitReact2) of the 10 training species (seed 11) and 60 of the unseen deer and
# wolf (seed 12), and for the photo fit's lying and sitting poses 30 lying frames (the last 15 %
# of Death, seed 13) and 30 authored lying or sitting poses (seed 14) of deer, wolf, horse, cow and
# fox; whole-animal framing, about 15 s. Rendered again when the baked templates change
# (the manifest records each template's sha256). Idempotent; run from the repo root after the
# templates are baked.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
fail() { printf 'eval_renders.sh failed: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || fail ".venv/bin/python is missing (run scripts/setup.sh first)"
SP="alpaca bull cow donkey fox horse horse_white husky shibainu stag"
HELD="Attack Attack_Headbutt Attack_Kick Death Eating Gallop Idle Idle_2 Idle_2_HeadLow Idle_Headlow Idle_HitReact1 Jump_ToIdle Walk"

current() {  # current DIR: the manifest is complete and its templates are today's
  "$PY" - "$1" <<'PYEOF'
import hashlib, json, os, sys
path = os.path.join(sys.argv[1], "manifest.json")
try:
    m = json.load(open(path))
except (OSError, ValueError):
    sys.exit(1)
for species, sha in m.get("templates", {}).items():
    t = os.path.join(".cache", "templates", species + ".npz")
    if not os.path.isfile(t) or hashlib.sha256(open(t, "rb").read()).hexdigest() != sha:
        sys.exit(1)
sys.exit(0 if len(m.get("files", [])) == m.get("count", -1) else 1)
PYEOF
}

render() {  # render DIR COUNT SEED ARGS...
  local dir=$1 count=$2 seed=$3
  shift 3
  if current "$dir"; then
    echo "$dir is up to date" >&2
    return 0
  fi
  rm -rf "$dir"
  .venv/bin/dualpm synth --out "$dir" --count "$count" --seed "$seed" --closeup-probability 0 --workers 1 "$@" \
    > /dev/null || fail "rendering $dir"
}

POSE_SP="deer wolf horse cow fox"
NOT_DEATH="Attack Attack_Headbutt Attack_Kick Eating Gallop Gallop_Jump Idle Idle_2 Idle_2_HeadLow Idle_Headlow Idle_HitReact1 Idle_HitReact2 Jump_toIdle Walk"

render .cache/synth/eval/heldout_clips 60 11 --species $SP --exclude-clips $HELD
render .cache/synth/eval/unseen_species 60 12 --species deer wolf
render .cache/synth/eval/lying_death 30 13 --species $POSE_SP --exclude-clips $NOT_DEATH --frame-range 0.85 1
render .cache/synth/eval/authored 30 14 --species $POSE_SP --authored-probability 1
