"""Gradient checkpointing of the SAM image encoder, block by block (config `model.gradient_checkpointing`).

Each ViT block of `ImageEncoderViT.blocks` (with its adapters or LoRA layers inside) keeps only its
input during the forward pass and recomputes its activations in the backward pass, so a training step
holds one block's activations instead of all of them. Outputs and gradients equal the plain model's.

The blocks keep their modules and state-dict keys: only their class is swapped for a subclass whose
`forward` goes through `torch.utils.checkpoint` while training with gradients enabled.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint

_SUBCLASSES: dict[type, type] = {}


def _checkpointed_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    plain_forward = super(type(self), self).forward
    if self.training and torch.is_grad_enabled():
        return checkpoint(plain_forward, x, use_reentrant=False)
    return plain_forward(x)


def _checkpointed_class(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": _checkpointed_forward,
                                                                         "gradient_checkpointing": True})
    return _SUBCLASSES[cls]


def enable_gradient_checkpointing(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Checkpoint every block of `encoder` (in place); returns it."""
    for block in encoder.blocks:
        if not getattr(block, "gradient_checkpointing", False):
            block.__class__ = _checkpointed_class(type(block))
    return encoder


def uses_gradient_checkpointing(encoder: ImageEncoderViT) -> bool:
    return all(getattr(block, "gradient_checkpointing", False) for block in encoder.blocks)
