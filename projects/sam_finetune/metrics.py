"""Per-instance mask quality: IoU, Dice, pixel accuracy (from confusion counts per instance) and
boundary F1 (Csurka et al. 2013: boundary pixels matched within a tolerance of 0.75% of the
image diagonal)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

METRIC_NAMES = ("iou", "dice", "pixel_accuracy", "boundary_f1")


def region_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred, target (N, H, W) bool -> IoU, Dice, pixel accuracy per instance, each (N,).

    An empty prediction of an empty target scores 1.
    """
    pred, target = pred.flatten(1), target.flatten(1)
    tp = (pred & target).sum(1).float()
    fp = (pred & ~target).sum(1).float()
    fn = (~pred & target).sum(1).float()
    tn = (~pred & ~target).sum(1).float()
    union = tp + fp + fn
    one = torch.ones_like(tp)
    return {
        "iou": torch.where(union > 0, tp / union.clamp(min=1), one),
        "dice": torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), one),
        "pixel_accuracy": (tp + tn) / (tp + fp + tn + fn),
    }


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch the background (4-neighbourhood)."""
    eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask > 0) & (eroded == 0)


def boundary_f1(pred: np.ndarray, target: np.ndarray, tolerance: float | None = None) -> float:
    """F1 of boundary pixels of two HxW binary masks, matched within `tolerance` pixels."""
    pred, target = pred.astype(np.uint8), target.astype(np.uint8)
    if tolerance is None:
        tolerance = max(1.0, 0.0075 * float(np.hypot(*pred.shape)))
    pred_edge, target_edge = _boundary(pred), _boundary(target)
    if not pred_edge.any() and not target_edge.any():
        return 1.0
    if not pred_edge.any() or not target_edge.any():
        return 0.0
    # distance of every pixel to the nearest boundary pixel of the other mask
    dist_to_target = cv2.distanceTransform((~target_edge).astype(np.uint8), cv2.DIST_L2, 3)
    dist_to_pred = cv2.distanceTransform((~pred_edge).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float((dist_to_target[pred_edge] <= tolerance).mean())
    recall = float((dist_to_pred[target_edge] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def instance_metrics(logits: torch.Tensor, targets: torch.Tensor, valid_hw: tuple[int, int]) -> dict[str, list[float]]:
    """logits, targets (N, 1, S, S) in the padded input frame; only the un-padded (h, w) counts."""
    h, w = valid_hw
    pred = (logits[:, 0, :h, :w] > 0).cpu()
    truth = (targets[:, 0, :h, :w] > 0.5).cpu()
    out = {k: v.tolist() for k, v in region_metrics(pred, truth).items()}
    out["boundary_f1"] = [boundary_f1(p.numpy(), t.numpy()) for p, t in zip(pred, truth)]
    return out
