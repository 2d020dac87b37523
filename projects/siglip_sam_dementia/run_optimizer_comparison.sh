#!/usr/bin/env bash
# AdamW vs Lion vs SAM on the same data and seed. Lion gets its authors' scaling (lr / 3, wd x 3)
# unless LION_LEARNING_RATE is set; LEARNING_RATE applies to AdamW and SAM.
source "$(dirname "$0")/_common.sh"
for optimizer in ${OPTIMIZERS:-adamw lion sam}; do
  if [[ "$optimizer" == "lion" ]]; then
    lion_args=(--optimizer_type lion)
    if [[ -n "${LION_LEARNING_RATE:-}" ]]; then lion_args+=(--learning_rate "$LION_LEARNING_RATE"); fi
    "$PYTHON" trainer.py --data_dir "$DATA_DIR" --model_name "$MODEL_NAME" --num_epochs "$NUM_EPOCHS" \
      --batch_size "$BATCH_SIZE" --output_dir "$OUTPUT_DIR" --seed "$SEED" --parser "${PARSER:-English}" \
      "${lion_args[@]}" "${EXTRA[@]}"
  else
    train --parser "${PARSER:-English}" --optimizer_type "$optimizer" --sam_rho "$SAM_RHO"
  fi
done
tables
