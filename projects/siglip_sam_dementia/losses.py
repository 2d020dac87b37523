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

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)  # (B, 2)
        log_p_true = log_p.gather(1, labels[:, None]).squeeze(1)  # (B,)
        loss = -((1 - log_p_true.exp()) ** self.gamma) * log_p_true
        if self.alpha is not None:
            loss = loss * torch.where(labels == 1, self.alpha, 1 - self.alpha)
        return weighted_mean(loss, labels, self.class_weights)


class BinaryLogitLoss(nn.Module):
    """BCE on the single logit (B, 1) against labels in {0, 1}."""

    def __init__(self, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), labels.float(), reduction="none")
        return weighted_mean(loss, labels, self.class_weights)


def weighted_mean(loss: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample losses (B,), each weighted by its class's weight and normalised by the sum
    of the weights (what `nn.CrossEntropyLoss(weight=...)` does)."""
    if class_weights is None:
        return loss.mean()
    weights = class_weights.to(loss.device)[labels]
    return (loss * weights).sum() / weights.sum()


def auto_class_weights(labels: list[int]) -> torch.Tensor:
    """N / (2 N_class) per class (1.0 each when balanced), from the training split's labels."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=2).float()
    return counts.sum() / (2 * counts.clamp(min=1))


def build_loss(loss_type: str, focal_gamma: float = 2.0, focal_alpha: float | None = None,
               class_weights: torch.Tensor | None = None) -> nn.Module:
    """`class_weights`: (2,) weights of control and dementia, or None."""
    if loss_type == "cross_entropy":
        return nn.CrossEntropyLoss(weight=class_weights)
    if loss_type == "focal":
        return FocalLoss(focal_gamma, focal_alpha, class_weights)
    if loss_type == "bce":
        return BinaryLogitLoss(class_weights)
    raise ValueError(f"unknown loss_type {loss_type!r}: choose cross_entropy, focal or bce")


def dementia_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) -> sigmoid; (B, 2) -> softmax[:, 1]. Returns (B,) float32."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits.squeeze(-1))
    return torch.softmax(logits, dim=-1)[:, 1]
