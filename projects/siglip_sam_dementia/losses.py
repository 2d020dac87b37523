"""The three losses, and the one place logits become probabilities (so loss, AUC and threshold agree).

cross_entropy / focal: two logits, softmax. bce: one logit, sigmoid. The dementia probability used by
metrics, thresholds and predict.py always comes from `dementia_probability`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al.): CE weighted by (1 - p_true)^gamma, optionally by class alpha.

    alpha is the weight of the dementia class (class 1); control gets 1 - alpha. gamma = 0 and
    alpha = None give plain cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)  # (B, 2)
        log_p_true = log_p.gather(1, labels[:, None]).squeeze(1)  # (B,)
        loss = -((1 - log_p_true.exp()) ** self.gamma) * log_p_true
        if self.alpha is not None:
            loss = loss * torch.where(labels == 1, self.alpha, 1 - self.alpha)
        return loss.mean()


class BinaryLogitLoss(nn.Module):
    """BCE on the single logit (B, 1) against labels in {0, 1}."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), labels.float())


def build_loss(loss_type: str, focal_gamma: float = 2.0, focal_alpha: float | None = None) -> nn.Module:
    if loss_type == "cross_entropy":
        return nn.CrossEntropyLoss()
    if loss_type == "focal":
        return FocalLoss(focal_gamma, focal_alpha)
    if loss_type == "bce":
        return BinaryLogitLoss()
    raise ValueError(f"unknown loss_type {loss_type!r}: choose cross_entropy, focal or bce")


def dementia_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) -> sigmoid; (B, 2) -> softmax[:, 1]. Returns (B,) float32."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits.squeeze(-1))
    return torch.softmax(logits, dim=-1)[:, 1]
