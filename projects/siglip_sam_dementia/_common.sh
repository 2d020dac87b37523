# Sourced by the train_*.sh / run_*.sh scripts (after ../../shared/python.sh, which sets PYTHON to the
# project's .venv/bin/python): every setting can be overridden from the environment.
#   DATA_DIR MODEL_NAME NUM_EPOCHS BATCH_SIZE OUTPUT_DIR LEARNING_RATE SEED PYTHON EXTRA_ARGS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
: "${PYTHON:?source ../../shared/python.sh first}"
DATA_DIR="${DATA_DIR:-../training_dset}"
MODEL_NAME="${MODEL_NAME:-google/siglip2-base-patch16-naflex}"
NUM_EPOCHS="${NUM_EPOCHS:-100}"
BATCH_SIZE="${BATCH_SIZE:-32}"
OUTPUT_DIR="${OUTPUT_DIR:-./outputs}"
SEED="${SEED:-42}"
SAM_RHO="${SAM_RHO:-0.05}"
# shellcheck disable=SC2206
EXTRA=(${EXTRA_ARGS:-})
COMMON=(--data_dir "$DATA_DIR" --model_name "$MODEL_NAME" --num_epochs "$NUM_EPOCHS" --batch_size "$BATCH_SIZE"
        --output_dir "$OUTPUT_DIR" --seed "$SEED")
if [[ -n "${LEARNING_RATE:-}" ]]; then COMMON+=(--learning_rate "$LEARNING_RATE"); fi

train() { "$PYTHON" trainer.py "${COMMON[@]}" "$@" "${EXTRA[@]}"; }
tables() { "$PYTHON" results.py "$OUTPUT_DIR" --output "$OUTPUT_DIR/results.md"; }
