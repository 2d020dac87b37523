"""Loading a SAM for evaluation or inference from any checkpoint this tool writes or reads.

- our training payloads (best_model.pth, latest_model.pth, checkpoint_epoch_N.pth): they carry their
  config, so the strategy's modules (adapters / LoRA layers) are rebuilt and loaded strictly;
- a bare stock state dict (Meta's sam_vit_*.pth, MedSAM, our best_model_sam.pth): loaded into the
  registry model of `model_type`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from segment_anything.modeling import Sam

from projects.sam_finetune.config import FinetuneConfig, config_from_dict
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.modeling.strategies import apply_strategy
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state


@dataclass
class LoadedSam:
    sam: Sam
    model_type: str
    image_size: int
    normalization: str
    strategy: str  # "full" | "adapter" | "lora" | "stock"


def load_sam(checkpoint: str | Path, model_type: str | None = None, image_size: int | None = None,
             normalization: str = "sam") -> LoadedSam:
    """`model_type` / `image_size` / `normalization` are needed only for bare state dicts."""
    payload = load_checkpoint(checkpoint)
    stored = payload.get("config") if isinstance(payload, dict) else None
    if stored is None and isinstance(payload, dict):
        stored = (payload.get("extra") or {}).get("config")
    if stored is not None:
        cfg: FinetuneConfig = config_from_dict(copy.deepcopy(stored))
        cfg.model.checkpoint = None  # the payload has every weight; do not read the base file again
        finetuned = apply_strategy(build_sam(cfg.model.type, None, image_size=cfg.data.image_size), cfg)
        load_model_state(finetuned.sam, payload, strict=True, prefixes_to_strip=("module.", "sam."),
                         source_name=str(checkpoint))
        sam, model_type, image_size, normalization = finetuned.sam, cfg.model.type, cfg.data.image_size, \
            cfg.data.normalization
        strategy = cfg.finetuning.strategy
    else:
        if model_type is None:
            raise CheckpointError(f"{checkpoint}: a bare SAM state dict; the model type must be given")
        sam = build_sam(model_type, checkpoint, image_size=image_size)
        image_size = sam.image_encoder.img_size
        strategy = "stock"
    sam.eval()
    return LoadedSam(sam=sam, model_type=model_type, image_size=image_size, normalization=normalization,
                     strategy=strategy)
