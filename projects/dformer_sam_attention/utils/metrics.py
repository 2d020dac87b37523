"""Segmentation metrics from one confusion matrix (torchmetrics, DDP-aware): per-class IoU, mIoU,
pixel accuracy, and the per-class table."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from projects.dformer_sam_attention.utils.dataloader.transforms import IGNORE_INDEX


class SegmentationMetrics:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX).to(device)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """prediction, target: (B, H, W) class indices (target may hold 255)."""
        self.confusion.update(prediction, target)

    def compute(self) -> dict:
        matrix = self.confusion.compute().double()  # rows: truth, columns: prediction; synced over ranks
        true_positive = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        iou = true_positive / union  # NaN for a class absent from both truth and prediction
        return {"miou": float(iou.nanmean()), "pixel_acc": float(true_positive.sum() / matrix.sum().clamp(min=1)),
                "per_class_iou": iou.tolist()}


def per_class_table(per_class_iou: Sequence[float], class_names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"class": list(class_names), "IoU": [round(100 * v, 2) for v in per_class_iou]})


def chance_miou(num_classes: int) -> float:
    """mIoU of a uniform random guess on balanced classes: IoU_k = p/(p + p + … ) = 1/(2K − 1)."""
    return 1.0 / (2 * num_classes - 1)
