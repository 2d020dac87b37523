"""Loss types and weights, the IoU-head target, and the evaluation metrics on known masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torchvision.ops import sigmoid_focal_loss

from projects.sam_finetune.config import LossConfig, SegmentationLossConfig
from projects.sam_finetune.losses import SamFinetuneLoss, mask_iou
from projects.sam_finetune.metrics import boundary_f1, instance_metrics, region_metrics


def _data():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16)
    targets = (torch.rand(3, 1, 16, 16) > 0.6).float()
    iou_pred = torch.rand(3, 1)
    return logits, iou_pred, targets


def _loss(type_="dice_bce", dice_weight=1.0, bce_weight=1.0, iou_weight=1.0):
    cfg = LossConfig(segmentation_loss=SegmentationLossConfig(type=type_, dice_weight=dice_weight,
                                                              bce_weight=bce_weight))
    cfg.iou_loss.weight = iou_weight
    return SamFinetuneLoss(cfg)


def test_each_loss_type_and_weight():
    logits, iou_pred, targets = _data()
    dice = DiceLoss(sigmoid=True)(logits, targets)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    focal = sigmoid_focal_loss(logits, targets, reduction="mean")
    seg = {t: _loss(t).segmentation_loss(logits, targets) for t in ("dice", "bce", "dice_bce", "focal")}
    torch.testing.assert_close(seg["dice"], dice)
    torch.testing.assert_close(seg["bce"], bce)
    torch.testing.assert_close(seg["dice_bce"], dice + bce)
    torch.testing.assert_close(seg["focal"], focal)
    torch.testing.assert_close(_loss(dice_weight=2.0, bce_weight=0.5).segmentation_loss(logits, targets),
                               2 * dice + 0.5 * bce)
    torch.testing.assert_close(_loss("focal", bce_weight=3.0).segmentation_loss(logits, targets), 3 * focal)


def test_iou_head_is_regressed_to_the_true_iou():
    logits, iou_pred, targets = _data()
    true_iou = mask_iou(logits, targets)
    parts = _loss(iou_weight=0.5)(logits, iou_pred, targets)
    torch.testing.assert_close(parts.iou, F.mse_loss(iou_pred.squeeze(1), true_iou))
    torch.testing.assert_close(parts.total, parts.segmentation + 0.5 * parts.iou)
    iou_pred.requires_grad_(True)
    logits.requires_grad_(True)
    _loss(iou_weight=0.0)(logits, iou_pred, targets).total.backward()
    assert logits.grad is not None
    assert iou_pred.grad is None  # weight 0: the IoU head gets no gradient at all


def test_region_metrics_on_known_squares():
    pred = torch.zeros(1, 10, 10, dtype=torch.bool)
    truth = torch.zeros(1, 10, 10, dtype=torch.bool)
    pred[0, 0:4, 0:4] = True  # 16 px
    truth[0, 2:6, 0:4] = True  # 16 px, overlap 8
    metrics = region_metrics(pred, truth)
    assert metrics["iou"].item() == pytest.approx(8 / 24)
    assert metrics["dice"].item() == pytest.approx(16 / 32)
    assert metrics["pixel_accuracy"].item() == pytest.approx(84 / 100)
    empty = region_metrics(torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=torch.bool))
    assert empty["iou"].item() == 1.0 and empty["dice"].item() == 1.0


def test_boundary_f1():
    a = np.zeros((64, 64), np.uint8)
    a[10:30, 10:30] = 1
    assert boundary_f1(a, a) == 1.0
    shifted = np.roll(a, 1, axis=1)  # within the 1-pixel tolerance
    assert boundary_f1(shifted, a) == 1.0
    far = np.zeros_like(a)
    far[40:60, 40:60] = 1
    assert boundary_f1(far, a) == 0.0
    assert boundary_f1(np.zeros_like(a), a) == 0.0
    assert 0.0 < boundary_f1(np.roll(a, 5, axis=1), a) < 1.0


def test_instance_metrics_ignore_padding():
    logits = torch.full((1, 1, 8, 8), -5.0)
    targets = torch.zeros(1, 1, 8, 8)
    logits[..., :4, :4] = 5.0
    targets[..., :4, :4] = 1.0
    logits[..., 6:, :] = 5.0  # wrong, but in the padding below the 6-row image
    metrics = instance_metrics(logits, targets, (6, 8))
    assert metrics["iou"] == [1.0] and metrics["pixel_accuracy"] == [1.0]
