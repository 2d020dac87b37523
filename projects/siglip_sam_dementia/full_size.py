"""The real `google/siglip2-base-patch16-naflex` architecture with random weights, built from its
config here (no download), and a batch of generated recordings and transcripts shaped like the
trainer's: for the bench's real-size rows and `make gpu-check`.

The published config is Siglip2Config's defaults (both towers: width 768, 12 layers, 12 heads, MLP
3072; vision patch 16 with a 16x16 position grid; text 64 positions) with the Gemma vocabulary of
256000 tokens: about 375 M parameters, 197 M of them in the text embedding.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2TextConfig,
    Siglip2VisionConfig,
)
from transformers.utils import logging as hf_logging

from projects.siglip_sam_dementia.data_processor import windows_to_image_inputs
from projects.siglip_sam_dementia.model import DementiaClassifier
from projects.siglip_sam_dementia.tiny_model import tiny_siglip2_config

BASE_NAFLEX_VOCAB = 256000
BASE_NAFLEX_MAX_PATCHES = 256  # the processor's default patch budget per image (window)


def siglip2_base_naflex_config() -> Siglip2Config:
    return Siglip2Config(text_config=Siglip2TextConfig(vocab_size=BASE_NAFLEX_VOCAB).to_dict(),
                         vision_config=Siglip2VisionConfig().to_dict())


TINY_VOCAB = 600


def vocab_size_of(size: str) -> int:
    return BASE_NAFLEX_VOCAB if size == "full" else TINY_VOCAB


def random_backbone(size: str = "full", seed: int = 0) -> Siglip2Model:
    """size "full": the base NaFlex architecture; "tiny": the tests' 2-layer, width-32 one."""
    config = siglip2_base_naflex_config() if size == "full" else tiny_siglip2_config(vocab_size=TINY_VOCAB)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text config's default bos/eos ids are outside a small vocabulary
    try:
        return Siglip2Model(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def random_classifier(size: str = "full", gradient_checkpointing: bool = False, modality: str = "multimodal",
                      dropout: float = 0.1) -> DementiaClassifier:
    return DementiaClassifier(f"random siglip2 ({size})", modality=modality, dropout=dropout,
                              gradient_checkpointing=gradient_checkpointing, backbone=random_backbone(size))


def synthetic_batch(batch_size: int, vocab_size: int | None, text_length: int = 64, windows_per_recording: int = 1,
                    n_mels: int = 128, window_frames: int = 1000, patch_size: int = 16,
                    max_num_patches: int = BASE_NAFLEX_MAX_PATCHES, seed: int = 0) -> dict:
    """`batch_size` recordings of `windows_per_recording` log-mel windows (n_mels x window_frames; 1000
    frames = 10 s at hop 160) through the NaFlex processor, and `text_length`-token transcripts of random
    ids below `vocab_size` (None: no text, for audio-only models)."""
    rng = np.random.default_rng(seed)
    windows = [rng.random((n_mels, window_frames), dtype=np.float32)
               for _ in range(batch_size * windows_per_recording)]
    processor = Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches)
    inputs = {"batch_size": batch_size, **windows_to_image_inputs(windows, processor, max_num_patches),
              "audio_owner": torch.arange(batch_size).repeat_interleave(windows_per_recording)}
    if vocab_size is not None:
        generator = torch.Generator().manual_seed(seed)
        inputs.update(input_ids=torch.randint(0, vocab_size, (batch_size, text_length), generator=generator),
                      attention_mask=torch.ones(batch_size, text_length, dtype=torch.long),
                      text_owner=torch.arange(batch_size))
    return {"inputs": inputs, "labels": torch.arange(batch_size) % 2}


def to_device(batch: dict, device: torch.device) -> dict:
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch["inputs"].items()}
    return {"inputs": inputs, "labels": batch["labels"].to(device)}
