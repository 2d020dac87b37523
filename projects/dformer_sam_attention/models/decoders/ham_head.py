"""LightHamHead (Geng et al., "Is Attention Better Than Matrix Decomposition?", ICLR 2021), the
decoder DFormerv2 ships with: stages 1–3 resized to stride 8, concatenated, squeezed to
`ham_channels`, passed through a Hamburger (1×1 conv → NMF low-rank reconstruction → 1×1 conv,
residual), aligned to `channels` and classified.

Module names follow mmcv's `ConvModule` (`squeeze.conv.weight`, `squeeze.bn.running_mean`, ...), so the
published DFormerv2 segmentor checkpoints (`decode_head.*`) load into this head as they are.

NMF runs its multiplicative updates without gradient and back-propagates through one final
coefficient update, the "one-step gradient" of the paper (cheaper and more stable than unrolling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvModule(nn.Module):
    """1×1 conv → BatchNorm (optional) → ReLU (optional), named like mmcv's ConvModule: `conv`, `bn`.
    The conv has a bias only when there is no norm (mmcv's `bias="auto"`)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.activate = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.activate(x) if self.activate is not None else x


def conv_bn_relu(in_channels: int, out_channels: int) -> ConvModule:
    return ConvModule(in_channels, out_channels)


class NMF2D(nn.Module):
    """Non-negative matrix factorisation of (B, C, H, W) as C×N ≈ bases (C×R) · coefᵀ (R×N)."""

    def __init__(self, rank: int = 64, train_steps: int = 6, eval_steps: int = 7, eps: float = 1e-6):
        super().__init__()
        self.rank = rank
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.eps = eps

    def update_coef(self, x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        numerator = x.transpose(1, 2) @ bases  # (B, N, R)
        denominator = coef @ (bases.transpose(1, 2) @ bases)
        return coef * numerator / (denominator + self.eps)

    def update_bases(self, x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        numerator = x @ coef  # (B, C, R)
        denominator = bases @ (coef.transpose(1, 2) @ coef)
        return bases * numerator / (denominator + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        flat = x.reshape(batch, channels, height * width)  # non-negative: follows a ReLU
        # random non-negative bases each call (the paper's RAND_INIT), from the seeded global RNG
        bases = F.normalize(torch.rand(batch, channels, self.rank, device=x.device, dtype=x.dtype), dim=1)
        with torch.no_grad():
            coef = (flat.transpose(1, 2) @ bases).softmax(dim=-1)  # (B, N, R)
            for _ in range(self.train_steps if self.training else self.eval_steps):
                coef = self.update_coef(flat, bases, coef)
                bases = self.update_bases(flat, bases, coef)
        coef = self.update_coef(flat, bases, coef)  # the one step that carries gradient
        return (bases @ coef.transpose(1, 2)).view(batch, channels, height, width)


class Hamburger(nn.Module):
    def __init__(self, ham_channels: int, rank: int):
        super().__init__()
        self.ham_in = ConvModule(ham_channels, ham_channels, norm=False, relu=False)
        self.ham = NMF2D(rank=rank)
        self.ham_out = ConvModule(ham_channels, ham_channels, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        enjoy = self.ham_out(self.ham(F.relu(self.ham_in(x))))
        return F.relu(x + enjoy)


class LightHamHead(nn.Module):
    """features (4 maps) → logits (B, num_classes, H/8, W/8).

    Args:
        in_channels: channels of all encoder stages.
        num_classes: output classes.
        in_index: which stages are fused (DFormerv2 uses 1, 2, 3).
        ham_channels: width of the Hamburger (512 in the official head, whatever `channels` is).
        channels: width of the classifier input (`decoder_embed_dim`: 512 on NYU, 1024 on SUN RGB-D).
        rank: NMF rank.
        dropout: before the classifier.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, in_index: Sequence[int] = (1, 2, 3),
                 ham_channels: int = 512, channels: int = 512, rank: int = 64, dropout: float = 0.1):
        super().__init__()
        self.in_index = list(in_index)
        self.squeeze = conv_bn_relu(sum(in_channels[i] for i in self.in_index), ham_channels)
        self.hamburger = Hamburger(ham_channels, rank)
        self.align = conv_bn_relu(ham_channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], text: Tensor | None = None) -> Tensor:
        selected = [features[i] for i in self.in_index]
        size = selected[0].shape[2:]
        fused = torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in selected], 1)
        x = self.align(self.hamburger(self.squeeze(fused)))
        return self.conv_seg(self.dropout(x))
