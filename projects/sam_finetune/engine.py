"""What one batch does: embeddings (cached when the encoder is frozen), per-image decoding, loss,
and evaluation over a loader. The training loop itself lives in train.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from projects.sam_finetune.losses import SamFinetuneLoss, mask_iou
from projects.sam_finetune.metrics import METRIC_NAMES, instance_metrics
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam, upscale_logits
from projects.sam_finetune.transforms import denormalize_image
from shared.checkpoint import unwrap_model

log = logging.getLogger(__name__)


@dataclass
class EmbeddingCache:
    """Image embeddings by dataset index, kept on the CPU.

    Valid only while the image encoder does not change (frozen, no adapter/LoRA) and an image's
    input pixels are the same every epoch (no pixel-changing augmentation).
    """

    store: dict[int, torch.Tensor] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    @torch.no_grad()
    def embeddings(self, model: PromptedSam, images: torch.Tensor, indices: list[int]) -> torch.Tensor:
        missing = [i for i, index in enumerate(indices) if index not in self.store]
        if missing:
            computed = model.encode_images(images[missing])
            for i, embedding in zip(missing, computed):
                self.store[indices[i]] = embedding.detach().to("cpu", copy=True)
        self.hits += len(indices) - len(missing)
        self.misses += len(missing)
        return torch.stack([self.store[index] for index in indices]).to(images.device)


def batch_prompts(batch: dict[str, Any], device: torch.device) -> list[ImagePrompts]:
    return [ImagePrompts(boxes, coords, labels).to(device)
            for boxes, coords, labels in zip(batch["boxes"], batch["point_coords"], batch["point_labels"])]


def run_model(model: torch.nn.Module, batch: dict[str, Any], device: torch.device,
              cache: EmbeddingCache | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Forward one batch through `model` (possibly DDP-wrapped): per image (low-res logits, IoU)."""
    images = batch["images"].to(device, non_blocking=True)
    prompts = batch_prompts(batch, device)
    if cache is not None:
        embeddings = cache.embeddings(unwrap_model(model), images, batch["index"].tolist())
        return model(prompts, image_embeddings=embeddings)
    return model(prompts, images=images)


def batch_loss(model: torch.nn.Module, batch: dict[str, Any], loss_fn: SamFinetuneLoss, device: torch.device,
               cache: EmbeddingCache | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over every instance of every image in the batch, and its parts for logging."""
    outputs = run_model(model, batch, device, cache)
    image_size = unwrap_model(model).image_size
    logits = torch.cat([upscale_logits(low_res, image_size) for low_res, _ in outputs])  # (N, 1, S, S)
    iou_pred = torch.cat([iou for _, iou in outputs])  # (N, 1)
    targets = torch.cat(batch["masks"]).unsqueeze(1).to(device)  # (N, 1, S, S)
    parts = loss_fn(logits, iou_pred, targets)
    aux = {"segmentation_loss": float(parts.segmentation), "iou_loss": float(parts.iou),
           "train_iou": float(mask_iou(logits.detach(), targets).mean())}
    return parts.total, aux


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """HxWx3 uint8: ground truth tinted green, prediction tinted red (both: yellow)."""
    picture = image.astype(np.float32)
    picture[truth] = 0.5 * picture[truth] + 0.5 * np.array([0, 255, 0])
    picture[pred] = 0.5 * picture[pred] + 0.5 * np.array([255, 0, 0])
    return picture.clip(0, 255).astype(np.uint8)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, loss_fn: SamFinetuneLoss | None, device: torch.device,
             amp, cache: EmbeddingCache | None = None, normalization: str = "sam",
             num_overlays: int = 0) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, np.ndarray]]:
    """Per-image rows (image_path, instances, mean metrics), the loss mean, and a few overlay pictures."""
    was_training = model.training
    model.eval()
    rows, losses, overlays = [], [], {}
    image_size = unwrap_model(model).image_size
    for batch in loader:
        if len(batch["images"]) == 0:
            continue
        with amp.autocast():
            outputs = run_model(model, batch, device, cache)
        for i, (low_res, iou_pred) in enumerate(outputs):
            logits = upscale_logits(low_res, image_size)
            targets = batch["masks"][i].unsqueeze(1).to(device)
            if loss_fn is not None:
                losses.append(float(loss_fn(logits, iou_pred, targets).total))
            per_instance = instance_metrics(logits, targets, batch["input_size"][i])
            rows.append({"image_path": batch["image_path"][i], "instances": len(targets),
                         **{name: float(np.mean(per_instance[name])) for name in METRIC_NAMES}})
            if len(overlays) < num_overlays:
                h, w = batch["input_size"][i]
                picture = denormalize_image(batch["images"][i], normalization)[:h, :w]
                truth = targets[:, 0, :h, :w].any(0).cpu().numpy()
                pred = (logits[:, 0, :h, :w] > 0).any(0).cpu().numpy()
                overlays[f"image_{len(overlays)}"] = overlay(picture, truth, pred)
    model.train(was_training)
    extra = {"loss": float(np.mean(losses))} if losses else {}
    return rows, extra, overlays


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over images of the per-image metrics."""
    return {name: float(np.mean([row[name] for row in rows])) if rows else float("nan") for name in METRIC_NAMES}
