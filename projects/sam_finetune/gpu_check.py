"""`make gpu-check` cases for this tool: Segment Anything fine-tuning at full size (Meta's vit_b
architecture with random weights, generated 1024 px images and box prompts, no downloads), one case
per strategy (full with the encoder training, adapter, LoRA), with and without gradient checkpointing
of the image encoder (`model.gradient_checkpointing`).

`extra` (on the first case): epoch time of a frozen-encoder run without vs with the embedding cache
(its second epoch, when every embedding is cached), on the same device.

size="full": vit_b at 1024 px, batch 2 images with 3 boxes each; size="tiny": the CPU test model at 64 px.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from projects.sam_finetune.config import FinetuneConfig, config_from_dict
from projects.sam_finetune.engine import EmbeddingCache
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam, upscale_logits
from projects.sam_finetune.modeling.strategies import apply_strategy
from shared.gpu_check import GpuCheckCase

TOOL = "sam_finetune"
SIZES = {"full": ("vit_b", 1024, 2), "tiny": ("tiny", 64, 2)}  # size: (model type, image size, batch)
BOXES_PER_IMAGE = 3
CACHE_IMAGES = {"full": 16, "tiny": 4}


def _config(size: str, strategy: str, gradient_checkpointing: bool, freeze_encoder: bool = False) -> FinetuneConfig:
    model_type, image_size, _ = SIZES[size]
    return config_from_dict({
        "model": {"type": model_type, "freeze_image_encoder": freeze_encoder,
                  "gradient_checkpointing": gradient_checkpointing},
        "data": {"image_size": image_size}, "finetuning": {"strategy": strategy},
    })


def _build(size: str, strategy: str, gradient_checkpointing: bool, freeze_encoder: bool = False) -> PromptedSam:
    torch.manual_seed(0)
    cfg = _config(size, strategy, gradient_checkpointing, freeze_encoder)
    return PromptedSam(apply_strategy(build_sam(cfg.model.type, None, image_size=cfg.data.image_size), cfg).sam)


def make_batch(size: str, device: torch.device, images: int | None = None) -> dict[str, Any]:
    """Random images with BOXES_PER_IMAGE rectangular objects each: images, boxes and target masks."""
    _, image_size, batch = SIZES[size]
    count = images or batch
    generator = torch.Generator().manual_seed(1)
    boxes, masks = [], []
    for _ in range(count):
        corners = torch.randint(0, image_size // 2, (BOXES_PER_IMAGE, 2), generator=generator)
        extents = torch.randint(image_size // 8, image_size // 2, (BOXES_PER_IMAGE, 2), generator=generator)
        box = torch.cat([corners, corners + extents], dim=1).float()  # (N, 4) x0, y0, x1, y1
        mask = torch.zeros(BOXES_PER_IMAGE, 1, image_size, image_size)
        for i, (x0, y0, x1, y1) in enumerate(box.long().tolist()):
            mask[i, 0, y0:y1, x0:x1] = 1.0
        boxes.append(box.to(device))
        masks.append(mask.to(device))
    return {"images": torch.randn(count, 3, image_size, image_size, generator=generator).to(device),
            "prompts": [ImagePrompts(boxes=b) for b in boxes], "masks": masks, "index": list(range(count))}


def _loss(model: nn.Module, batch: dict[str, Any], loss_fn: SamFinetuneLoss,
          embeddings: torch.Tensor | None = None) -> torch.Tensor:
    outputs = model(batch["prompts"], images=None if embeddings is not None else batch["images"],
                    image_embeddings=embeddings)
    logits = torch.cat([upscale_logits(low_res, model.image_size) for low_res, _ in outputs])
    iou = torch.cat([iou for _, iou in outputs])
    return loss_fn(logits, iou, torch.cat(batch["masks"])).total


def cache_epoch_times(size: str, device: torch.device) -> dict[str, float]:
    """Frozen encoder, CACHE_IMAGES images one per step: epoch seconds without vs with the cache."""
    model = _build(size, "full", False, freeze_encoder=True).to(device)
    loss_fn = SamFinetuneLoss(FinetuneConfig().loss)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    images = make_batch(size, device, images=CACHE_IMAGES[size])

    def epoch(cache: EmbeddingCache | None) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for i in range(len(images["index"])):
            one = {"images": images["images"][i:i + 1], "prompts": images["prompts"][i:i + 1],
                   "masks": images["masks"][i:i + 1]}
            embeddings = cache.embeddings(model, one["images"], [i]) if cache is not None else None
            optimizer.zero_grad(set_to_none=True)
            _loss(model, one, loss_fn, embeddings).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    epoch(None)  # warm-up: kernels, allocator
    uncached = epoch(None)
    cache = EmbeddingCache()
    epoch(cache)  # fills the cache
    cached = epoch(cache)
    return {"images": float(CACHE_IMAGES[size]), "uncached_epoch_s": uncached, "cached_epoch_s": cached,
            "cache_speedup": uncached / cached}


def make_case(size: str, strategy: str, with_extra: bool) -> GpuCheckCase:
    model_type, image_size, batch = SIZES[size]
    loss_fn = SamFinetuneLoss(FinetuneConfig().loss)
    what = {"full": "full fine-tuning (encoder trains)", "adapter": "adapters", "lora": "LoRA r=4 on qkv/proj"}
    return GpuCheckCase(
        tool=TOOL, name=f"{model_type} {image_size}px batch {batch}x{BOXES_PER_IMAGE} boxes, {what[strategy]}",
        build_model=lambda checkpointing: _build(size, strategy, checkpointing),
        make_batch=lambda device: make_batch(size, device),
        loss=lambda model, data: _loss(model, data, loss_fn),
        optimizers=("sam", "adamw"), lr=1e-4, steps=4,
        extra=(lambda device: cache_epoch_times(size, device)) if with_extra else None,
        notes=["gradient checkpointing: every image-encoder block (torch.utils.checkpoint), adapters/LoRA inside"],
    )


def gpu_check_cases(size: str = "full") -> list[GpuCheckCase]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return [make_case(size, strategy, with_extra=strategy == "full") for strategy in ("full", "adapter", "lora")]
