#!/usr/bin/env bash
# Zero-shot cross-lingual transfer: train on three languages, test on the held-out one (never seen
# before the final test: validation comes from the training languages). Default: EN+ES+ZH -> Greek,
# then Spanish and Mandarin held out. Each with SAM and with AdamW so the cross-lingual table
# (SAM AUC vs AdamW AUC) is complete. Override HELD_OUT_LANGUAGES and OPTIMIZERS to run fewer.
source "$(dirname "$0")/../../shared/python.sh"
source "$(dirname "$0")/_common.sh"
ALL_LANGUAGES=(English Greek Spanish Mandarin)
for held_out in ${HELD_OUT_LANGUAGES:-Greek Spanish Mandarin}; do
  train_languages=()
  for language in "${ALL_LANGUAGES[@]}"; do
    [[ "$language" != "$held_out" ]] && train_languages+=("$language")
  done
  for optimizer in ${OPTIMIZERS:-sam adamw}; do
    train --parser cross_lingual --train_languages "${train_languages[@]}" --test_languages "$held_out" \
      --optimizer_type "$optimizer" --sam_rho "$SAM_RHO" --loss_type "${LOSS_TYPE:-cross_entropy}"
  done
done
tables
