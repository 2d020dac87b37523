"""Segmentation losses on per-instance mask logits, plus the IoU-head loss.

Dice comes from MONAI, focal from torchvision, BCE from torch. The IoU head is trained like SAM's:
mean squared error between its prediction and the IoU the predicted mask actually has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torchvision.ops import sigmoid_focal_loss

from projects.sam_finetune.config import LossConfig


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with {0,1} targets, per instance: (N, 1, H, W) x2 -> (N,). Empty vs empty = 1."""
    pred = logits > 0
    truth = targets > 0.5
    intersection = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


@dataclass
class LossParts:
    total: torch.Tensor
    segmentation: torch.Tensor
    iou: torch.Tensor


class SamFinetuneLoss(torch.nn.Module):
    def __init__(self, cfg: LossConfig):
        super().__init__()
        seg = cfg.segmentation_loss
        self.type, self.dice_weight, self.bce_weight = seg.type, seg.dice_weight, seg.bce_weight
        self.iou_weight = cfg.iou_loss.weight
        self.dice = DiceLoss(sigmoid=True, reduction="mean")  # per instance, then averaged

    def segmentation_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits, targets (N, 1, H, W) -> scalar."""
        logits = logits.float()
        if self.type == "dice":
            return self.dice_weight * self.dice(logits, targets)
        if self.type == "bce":
            return self.bce_weight * F.binary_cross_entropy_with_logits(logits, targets)
        if self.type == "focal":
            return self.bce_weight * sigmoid_focal_loss(logits, targets, reduction="mean")
        return (self.dice_weight * self.dice(logits, targets)
                + self.bce_weight * F.binary_cross_entropy_with_logits(logits, targets))

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor) -> LossParts:
        """logits (N, 1, H, W), iou_pred (N, 1), targets (N, 1, H, W) {0,1}."""
        segmentation = self.segmentation_loss(logits, targets)
        true_iou = mask_iou(logits.detach(), targets)
        iou = F.mse_loss(iou_pred.float().squeeze(1), true_iou)
        total = segmentation + self.iou_weight * iou if self.iou_weight > 0 else segmentation
        return LossParts(total=total, segmentation=segmentation.detach(), iou=iou.detach())
