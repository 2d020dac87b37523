#!/usr/bin/env bash
# SAM on English, Greek, Spanish and Mandarin pooled (speaker splits per language).
source "$(dirname "$0")/../../shared/python.sh"
source "$(dirname "$0")/_common.sh"
train --parser all --optimizer_type sam --sam_rho "$SAM_RHO" --loss_type "${LOSS_TYPE:-cross_entropy}"
