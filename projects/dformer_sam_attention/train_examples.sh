#!/usr/bin/env bash
# Six preset ablations of how the Semantic Alignment Module attends:
#   ./train_examples.sh N [extra train.py arguments]     (N = 1..6)
# Each preset prints what it sets, then runs ./train.sh with those flags and the extra arguments.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESET="${1:-}"
if [ -z "$PRESET" ]; then
    echo "usage: $0 N [extra train.py arguments], N in 1..6" >&2
    exit 2
fi
shift
case "$PRESET" in
    1) DESC="defaults: decoder cosine + learnable s=14.285714, encoder plain + fixed s=1.0"
       FLAGS=() ;;
    2) DESC="both sides cosine + learnable temperature (encoder init 14.285714)"
       FLAGS=(--sam-encoder-use-cosine --sam-encoder-learnable-temp --sam-encoder-logit-init 14.285714) ;;
    3) DESC="both sides plain attention + fixed temperature (decoder init 1.0)"
       FLAGS=(--no-sam-decoder-use-cosine --no-sam-decoder-learnable-temp --sam-decoder-logit-init 1.0) ;;
    4) DESC="swapped: decoder plain + fixed s=1.0, encoder cosine + learnable s=14.285714"
       FLAGS=(--no-sam-decoder-use-cosine --no-sam-decoder-learnable-temp --sam-decoder-logit-init 1.0
              --sam-encoder-use-cosine --sam-encoder-learnable-temp --sam-encoder-logit-init 14.285714) ;;
    5) DESC="no alignment module: plain DFormerv2 + the upstream LightHamHead (the baseline)"
       FLAGS=(--no-enable-text-guidance --decoder ham) ;;
    6) DESC="decoder-only alignment (no encoder-side modules)"
       FLAGS=(--sam-enc-stages "") ;;
    *) echo "unknown preset '$PRESET': choose 1..6" >&2
       exit 2 ;;
esac
echo "preset $PRESET: $DESC"
if [ ${#FLAGS[@]} -eq 0 ]; then
    echo "sets: nothing (all defaults)"
else
    echo "sets: $(printf '%q ' "${FLAGS[@]}")"
fi
exec "$HERE/train.sh" "${FLAGS[@]}" "$@"
