#!/usr/bin/env bash
# Seven preset ablations of the Semantic Alignment Module, each stated against preset 1 (the defaults):
#   ./train_examples.sh N [extra train.py arguments]     (N = 1..7)
# Each preset prints what it changes against preset 1, then runs ./train.sh with those flags and the
# extra arguments. The text-logit scale of the HSG head is its own parameter, so presets 2-4 change only
# how the alignment attends.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRESET="${1:-}"
if [ -z "$PRESET" ]; then
    echo "usage: $0 N [extra train.py arguments], N in 1..7" >&2
    exit 2
fi
shift
case "$PRESET" in
    1) DESC="defaults: decoder cosine + learnable s=14.285714, encoder plain + fixed s=1.0 (changes nothing)"
       FLAGS=() ;;
    2) DESC="changes the encoder-side attention only: cosine + learnable s=14.285714"
       FLAGS=(--sam-encoder-use-cosine --sam-encoder-learnable-temp --sam-encoder-logit-init 14.285714) ;;
    3) DESC="changes the decoder-side attention only: plain + fixed s=1.0 (both sides plain + fixed)"
       FLAGS=(--no-sam-decoder-use-cosine --no-sam-decoder-learnable-temp --sam-decoder-logit-init 1.0) ;;
    4) DESC="changes both sides' attention (swapped): decoder plain + fixed s=1.0, encoder cosine + learnable s=14.285714"
       FLAGS=(--no-sam-decoder-use-cosine --no-sam-decoder-learnable-temp --sam-decoder-logit-init 1.0
              --sam-encoder-use-cosine --sam-encoder-learnable-temp --sam-encoder-logit-init 14.285714) ;;
    5) DESC="changes two things: no alignment module AND the LightHamHead decoder (the official DFormerv2 baseline)"
       FLAGS=(--no-enable-text-guidance --decoder ham) ;;
    6) DESC="changes the encoder side only: no encoder-side modules (decoder-only alignment)"
       FLAGS=(--sam-enc-stages "") ;;
    7) DESC="changes one thing: no alignment module and no text logits, same HSG head (the module's own ablation)"
       FLAGS=(--no-enable-text-guidance) ;;
    *) echo "unknown preset '$PRESET': choose 1..7" >&2
       exit 2 ;;
esac
echo "preset $PRESET: $DESC"
if [ ${#FLAGS[@]} -eq 0 ]; then
    echo "sets: nothing (all defaults)"
else
    echo "sets: $(printf '%q ' "${FLAGS[@]}")"
fi
exec "$HERE/train.sh" "${FLAGS[@]}" "$@"
