#!/usr/bin/env bash
# Build SOPs for every recording in the given truth folders and score them with the
# shared corpus scorer. Usage: bench/score_corpus.sh OUT DIR [DIR...]
# Each DIR holds <name>.mp4 beside <name>.truth.json.
set -euo pipefail
out=$1; shift
score=${SCORE:-../shared/corpus/score.py}
truth=$(mktemp -d)
trap 'rm -rf "$truth"' EXIT
for d in "$@"; do
  cp "$d"/*.truth.json "$truth"/
  sopline build "$d" -o "$out" || true
done
python3 "$score" "$truth" "$out"
