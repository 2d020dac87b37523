"""Bottleneck adapters inside SAM's image-encoder blocks (Houlsby-style, as in Medical-SAM-Adapter).

An adapter is down-projection -> GELU -> up-projection with the up-projection initialised to zero,
so an adapted encoder starts out computing exactly what the pretrained one does. Placement:
"attn" — in series after each block's attention output (x + adapter(x));
"mlp"  — in parallel to each block's MLP, scaled by `mlp_scale` (mlp(x) + s * adapter(x));
"both" — one of each per block.
The encoder's own weights stay frozen; only adapters (and whatever the freeze flags leave to the
prompt encoder and mask decoder) train.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import ImageEncoderViT
from torch import nn

from projects.sam_finetune.config import AdapterConfig


class BottleneckAdapter(nn.Module):
    def __init__(self, dim: int, bottleneck_dim: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck_dim)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck_dim, dim)
        nn.init.zeros_(self.up.weight)  # identity at initialisation: the pretrained encoder unchanged
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., dim) -> (..., dim), the residual update only."""
        return self.up(self.act(self.down(x)))


class AttentionWithAdapter(nn.Module):
    """A block's attention followed in series by an adapter (residual)."""

    def __init__(self, attn: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.attn = attn
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        x = self.attn(x)
        return x + self.adapter(x)


class MLPWithParallelAdapter(nn.Module):
    """A block's MLP plus a scaled adapter on the same input."""

    def __init__(self, mlp: nn.Module, adapter: BottleneckAdapter, scale: float):
        super().__init__()
        self.mlp = mlp
        self.adapter = adapter
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        return self.mlp(x) + self.scale * self.adapter(x)


def bottleneck_width(dim: int, cfg: AdapterConfig) -> int:
    return cfg.bottleneck_dim if cfg.bottleneck_dim is not None else max(1, round(dim * cfg.bottleneck_ratio))


def add_adapters(encoder: ImageEncoderViT, cfg: AdapterConfig) -> list[str]:
    """Insert adapters into every block of `encoder` (in place); returns the adapters' module names."""
    names = []
    for i, block in enumerate(encoder.blocks):
        dim = block.norm1.normalized_shape[0]
        width = bottleneck_width(dim, cfg)
        if cfg.placement in ("attn", "both"):
            block.attn = AttentionWithAdapter(block.attn, BottleneckAdapter(dim, width))
            names.append(f"blocks.{i}.attn.adapter")
        if cfg.placement in ("mlp", "both"):
            block.mlp = MLPWithParallelAdapter(block.mlp, BottleneckAdapter(dim, width), cfg.mlp_scale)
            names.append(f"blocks.{i}.mlp.adapter")
    return names


def remove_adapters(encoder: ImageEncoderViT) -> None:
    """Put the stock attention / MLP modules back (in place), dropping the adapters."""
    for block in encoder.blocks:
        if isinstance(block.attn, AttentionWithAdapter):
            block.attn = block.attn.attn
        if isinstance(block.mlp, MLPWithParallelAdapter):
            block.mlp = block.mlp.mlp


def is_adapter_parameter(name: str) -> bool:
    return ".adapter." in f".{name}"
