"""`make gpu-check` cases for this tool: the SigLIP2 dementia classifier at full size (the
`google/siglip2-base-patch16-naflex` architecture with random weights, built from its config here;
generated log-mel windows and transcripts; no downloads), multimodal with concat fusion, trained
with SAM, AdamW and Lion, with and without gradient checkpointing of both towers (transformers' own).

`extra`: prediction throughput (recordings/s, forward only, eval mode) in fp32 and under bf16 autocast,
the path `predict.py --input` takes under a run's mixed-precision setting.

size="full": batch 32 recordings (the trainer's default --batch_size), one 10 s window (256 NaFlex
patches) and one 64-token transcript each; size="tiny": the tests' 2-layer width-32 model, batch 4.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from projects.siglip_sam_dementia.full_size import (
    random_classifier,
    synthetic_batch,
    to_device,
    vocab_size_of,
)
from shared.gpu_check import GpuCheckCase

TOOL = "siglip_sam_dementia"
# size: (batch of recordings, patch size, patch budget per window, mel bins, frames per window)
SIZES = {"full": (32, 16, 256, 128, 1000), "tiny": (4, 8, 64, 32, 250)}


def make_batch(size: str, device: torch.device) -> dict[str, Any]:
    batch_size, patch_size, max_patches, n_mels, frames = SIZES[size]
    batch = synthetic_batch(batch_size, vocab_size_of(size), n_mels=n_mels, window_frames=frames,
                            patch_size=patch_size, max_num_patches=max_patches)
    return to_device(batch, device)


def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return F.cross_entropy(model(**batch["inputs"]), batch["labels"])


@torch.no_grad()
def prediction_throughput(size: str, device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Recordings per second of eval-mode forwards, fp32 and bf16 autocast (when the device has bf16)."""
    model = random_classifier(size).to(device).eval()
    batch = make_batch(size, device)
    rates = {}
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with autocast:
            model(**batch["inputs"])  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                model(**batch["inputs"])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        rates[f"predict_recordings_per_s_{precision}"] = repeats * batch["inputs"]["batch_size"] / (
            time.perf_counter() - start)
    del model
    return rates


def gpu_check_cases(size: str = "full") -> list[GpuCheckCase]:
    batch_size, _, max_patches, _, _ = SIZES[size]
    description = ("siglip2-base-patch16-naflex (random)" if size == "full" else "tiny SigLIP2")
    return [GpuCheckCase(
        tool=TOOL,
        name=f"{description}, multimodal concat, batch {batch_size} x {max_patches} patches + 64 tokens",
        # no dropout in the head: the AMP-vs-fp32 loss curves then differ by precision alone
        build_model=lambda checkpointing: random_classifier(size, gradient_checkpointing=checkpointing, dropout=0.0),
        make_batch=lambda device: make_batch(size, device),
        loss=loss,
        optimizers=("sam", "adamw", "lion"),
        lr=1e-5,
        steps=4,
        extra=lambda device: prediction_throughput(size, device),
        notes=["gradient checkpointing: both SigLIP2 towers (transformers' activation_checkpointing_enable)",
               "classifier dropout 0 so that precisions are compared on the same function"],
    )]
