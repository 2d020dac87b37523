#!/usr/bin/env bash
# Train DFormerv2 + Semantic Alignment Module. Extra arguments go to utils/train.py, e.g.
#   ./train.sh --sam-encoder-use-cosine --sam-encoder-learnable-temp --sam-encoder-logit-init 14.285714
# Environment: CONFIG (default local_configs.NYUDepthv2.DFormerv2_S), GPUS (default 1; >1 uses torchrun),
# PYTHON (default: the project's .venv/bin/python when it exists, see shared/python.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$(dirname "$0")/../../shared/python.sh"
CONFIG="${CONFIG:-local_configs.NYUDepthv2.DFormerv2_S}"
GPUS="${GPUS:-1}"
if [ "$GPUS" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$GPUS" "$HERE/utils/train.py" \
        --config "$CONFIG" --syncbn "$@"
fi
exec "$PYTHON" "$HERE/utils/train.py" --config "$CONFIG" "$@"
