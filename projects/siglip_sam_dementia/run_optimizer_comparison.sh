#!/usr/bin/env bash
# AdamW vs Lion vs SAM on the same data and seed, each at a learning rate from its own documented default:
#   AdamW: ADAMW_LEARNING_RATE, else LEARNING_RATE, else the tool's AdamW default 2e-5;
#   SAM (over AdamW): SAM_LEARNING_RATE, else the AdamW rate (SAM's papers keep the base optimizer's rate);
#   Lion: LION_LEARNING_RATE, else lion-pytorch's own default 1e-4 (never the AdamW rate rescaled);
#   Lion's weight decay: LION_WEIGHT_DECAY, else 0.03 (its authors: 3-10x AdamW's 0.01).
# The rates are printed before the first run.
source "$(dirname "$0")/../../shared/python.sh"
source "$(dirname "$0")/_common.sh"
ADAMW_LR="${ADAMW_LEARNING_RATE:-${LEARNING_RATE:-2e-5}}"
SAM_LR="${SAM_LEARNING_RATE:-$ADAMW_LR}"
LION_LR="${LION_LEARNING_RATE:-1e-4}"
LION_WD="${LION_WEIGHT_DECAY:-0.03}"
echo "learning rates: adamw $ADAMW_LR | sam $SAM_LR | lion $LION_LR (weight decay $LION_WD)"
# COMMON carries --learning_rate when LEARNING_RATE is set; each run below sets its own after it (last wins).
for optimizer in ${OPTIMIZERS:-adamw lion sam}; do
  case "$optimizer" in
    adamw) rate=(--learning_rate "$ADAMW_LR") ;;
    sam) rate=(--learning_rate "$SAM_LR" --sam_rho "$SAM_RHO") ;;
    lion) rate=(--learning_rate "$LION_LR" --weight_decay "$LION_WD") ;;
    *) echo "unknown optimizer $optimizer (adamw, lion, sam)" >&2; exit 2 ;;
  esac
  train --parser "${PARSER:-English}" --optimizer_type "$optimizer" "${rate[@]}"
done
tables
