"""The published DFormerv2 segmentation checkpoints (NYU Depth v2 / SUN RGB-D, S/B/L), loaded as published.

The official trainer saves the whole segmentor's state dict: `backbone.*` (the encoder, whose names
ours share) and `decode_head.*` (LightHamHead in mmcv `ConvModule` naming: `squeeze.conv.weight`,
`squeeze.bn.running_mean`, `hamburger.ham_in.conv.bias`, ...), often under `model` or `state_dict`,
with DDP's `module.` prefix. It carries no settings, so the model is rebuilt from the shapes
(encoder size from the stem, decoder width and classes from the classifier) and checked against the
dataset config the user names; the head is `ham` with `ham_channels` 512, no alignment module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from projects.dformer_sam_attention.local_configs.config import SegConfig
from projects.dformer_sam_attention.models.builder import EncoderDecoder, ModelSettings
from shared.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state

# the stem's first conv has embed_dim / 2 output channels
BACKBONE_BY_STEM_WIDTH = {32: "DFormerv2_S", 40: "DFormerv2_B", 56: "DFormerv2_L", 8: "DFormerv2_Tiny"}
STEM_KEY = "backbone.patch_embed.proj.0.weight"
CLASSIFIER_KEY = "decode_head.conv_seg.weight"
HAM_KEY = "decode_head.hamburger.ham_in.conv.weight"


def is_official_segmentor(payload: Any) -> bool:
    """A state dict (possibly nested / `module.`-prefixed) of the official segmentor, not one of ours."""
    if isinstance(payload, Mapping) and "model_settings" in payload:
        return False
    try:
        state = extract_model_state(payload)
    except CheckpointError:
        return False
    return STEM_KEY in state and CLASSIFIER_KEY in state


def official_settings(state: Mapping[str, Tensor], config: SegConfig, source: str) -> ModelSettings:
    """The architecture the checkpoint holds, which must agree with the dataset config's classes."""
    missing = [k for k in (STEM_KEY, CLASSIFIER_KEY, HAM_KEY) if k not in state]
    if missing:
        raise CheckpointError(f"{source}: not an official DFormerv2 + LightHamHead segmentor (no {missing[0]})")
    stem_width = state[STEM_KEY].shape[0]
    if stem_width not in BACKBONE_BY_STEM_WIDTH:
        raise CheckpointError(f"{source}: stem width {stem_width} is no DFormerv2 size (S/B/L have 32/40/56)")
    num_classes, channels = state[CLASSIFIER_KEY].shape[:2]
    if num_classes != config.num_classes:
        raise CheckpointError(f"{source}: classifies {num_classes} classes but --config {config.dataset_name} "
                              f"has {config.num_classes}; name the dataset the checkpoint was trained on")
    return ModelSettings(backbone=BACKBONE_BY_STEM_WIDTH[stem_width], decoder="ham", num_classes=num_classes,
                         decoder_embed_dim=channels, ham_channels=state[HAM_KEY].shape[0], ham_rank=config.ham_rank,
                         drop_path_rate=0.0, text_guidance=False)


def load_official_segmentor(source: str | os.PathLike | Mapping[str, Any], config: SegConfig,
                            payload: Any = None) -> EncoderDecoder:
    """Build the model a published checkpoint holds and load it strictly (every key, every shape)."""
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    if payload is None:
        payload = load_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    try:
        state = extract_model_state(payload)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    model = EncoderDecoder(official_settings(state, config, name))
    load_model_state(model, state, strict=True, source_name=name)
    return model
