#!/usr/bin/env bash
# SAM with each loss: cross_entropy, focal, bce. PARSER (default English) picks the data.
source "$(dirname "$0")/../../shared/python.sh"
source "$(dirname "$0")/_common.sh"
for loss in ${LOSS_TYPES:-cross_entropy focal bce}; do
  train --parser "${PARSER:-English}" --optimizer_type sam --sam_rho "$SAM_RHO" --loss_type "$loss"
done
tables
