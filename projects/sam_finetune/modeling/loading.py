"""Loading a SAM for evaluation or inference from any checkpoint this tool writes or reads.

- our training payloads (best_model.pth, latest_model.pth, checkpoint_epoch_N.pth): they carry their
  config, so the strategy's modules (adapters / LoRA layers) are rebuilt and loaded strictly;
- a bare stock state dict (Meta's sam_vit_*.pth, MedSAM, our best_model_sam.pth): loaded into the
  registry model of `model_type`, with the preprocessing.json beside it when there is one.

The returned model's `pixel_mean` / `pixel_std` are set for its normalisation, so the official
`SamPredictor(loaded.sam).set_image(map_intensity(image, loaded.preprocessing.intensity))` sees exactly
what `preprocess_image(image, loaded.preprocessing)` gives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from segment_anything.modeling import Sam

from projects.sam_finetune.config import FinetuneConfig, config_from_dict
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.modeling.strategies import apply_strategy
from projects.sam_finetune.preprocess import (
    PREPROCESSING_FILE,
    IntensityMapping,
    Preprocessing,
    set_sam_normalization,
)
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state


@dataclass
class LoadedSam:
    sam: Sam
    model_type: str
    image_size: int
    normalization: str
    strategy: str  # "full" | "adapter" | "lora" | "stock"
    preprocessing: Preprocessing
    category_ids: list[int] | None = None  # COCO categories it was trained on ([] all; None unknown)
    preprocessing_from: str | None = None  # the file its preprocessing was read from (None: the arguments)


def load_sam(checkpoint: str | Path, model_type: str | None = None, image_size: int | None = None,
             normalization: str = "sam") -> LoadedSam:
    """`model_type` / `image_size` / `normalization` are needed only for bare state dicts without a
    preprocessing.json beside them (then the intensity mapping is the default, "auto")."""
    payload = load_checkpoint(checkpoint)
    stored = payload.get("config") if isinstance(payload, dict) else None
    if stored is None and isinstance(payload, dict):
        stored = (payload.get("extra") or {}).get("config")
    category_ids = None
    if stored is not None:
        stored = {key: value for key, value in stored.items() if key != "resolved"}
        cfg: FinetuneConfig = config_from_dict(copy.deepcopy(stored))
        cfg.model.checkpoint = None  # the payload has every weight; do not read the base file again
        finetuned = apply_strategy(build_sam(cfg.model.type, None, image_size=cfg.data.image_size), cfg)
        load_model_state(finetuned.sam, payload, strict=True, prefixes_to_strip=("module.", "sam."),
                         source_name=str(checkpoint))
        sam, model_type, image_size, normalization = finetuned.sam, cfg.model.type, cfg.data.image_size, \
            cfg.data.normalization
        strategy = cfg.finetuning.strategy
        preprocessing, category_ids = Preprocessing.from_config(cfg), list(cfg.data.category_ids)
        preprocessing_from = str(checkpoint)
    else:
        if model_type is None:
            raise CheckpointError(f"{checkpoint}: a bare SAM state dict; the model type must be given")
        beside = Path(checkpoint).parent / PREPROCESSING_FILE
        preprocessing = Preprocessing.load(beside) if beside.is_file() else None
        preprocessing_from = str(beside) if preprocessing is not None else None
        sam = build_sam(model_type, checkpoint, image_size=image_size or (preprocessing and preprocessing.image_size))
        image_size = sam.image_encoder.img_size
        if preprocessing is None:
            preprocessing = Preprocessing(image_size=image_size, normalization=normalization,
                                          intensity=IntensityMapping())
        elif preprocessing.image_size != image_size:
            raise CheckpointError(f"{beside}: image_size {preprocessing.image_size} but {checkpoint} "
                                  f"takes {image_size}")
        normalization, strategy = preprocessing.normalization, "stock"
    sam.eval()
    set_sam_normalization(sam, normalization)
    return LoadedSam(sam=sam, model_type=model_type, image_size=image_size, normalization=normalization,
                     strategy=strategy, preprocessing=preprocessing, category_ids=category_ids,
                     preprocessing_from=preprocessing_from)
