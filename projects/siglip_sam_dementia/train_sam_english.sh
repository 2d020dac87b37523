#!/usr/bin/env bash
# SAM on English (ADReSS-style) data. Override: DATA_DIR MODEL_NAME NUM_EPOCHS BATCH_SIZE OUTPUT_DIR
#   LEARNING_RATE SEED SAM_RHO LOSS_TYPE EXTRA_ARGS
source "$(dirname "$0")/../../shared/python.sh"
source "$(dirname "$0")/_common.sh"
train --parser English --optimizer_type sam --sam_rho "$SAM_RHO" --loss_type "${LOSS_TYPE:-cross_entropy}"
