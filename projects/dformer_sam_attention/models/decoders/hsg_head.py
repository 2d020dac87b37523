"""HSG head: hierarchical features fused, refined by the decoder-side Semantic Alignment Module, and
classified twice — by a learned 1×1 classifier and by the cosine similarity of pixel embeddings to
the class text embeddings, scaled by its own learnable scale (`text_logit_scale`, separate from the
alignment module's attention temperature, so an ablation of the attention changes one thing). The two
logit maps are summed.

Without text guidance (`text_dim=None`) the head is the plain baseline: fuse → classify.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from projects.dformer_sam_attention.models.blocks.semantic_alignment import (
    AlignmentAttention,
    AttentionTemperature,
    SemanticAlignmentModule,
)
from projects.dformer_sam_attention.models.decoders.ham_head import conv_bn_relu


class HSGHead(nn.Module):
    """features (4 maps), text (T, C_t) → logits (B, num_classes, H/s, W/s), s the stride of in_index[0].

    Args:
        in_channels: channels of all encoder stages.
        num_classes: output classes (= number of text embeddings T).
        in_index: stages that are fused.
        channels: width of the fused features.
        text_dim: width of the text embeddings; None builds the head without any text guidance.
        align_heads: heads of the decoder-side alignment module.
        attention: how the decoder-side alignment attends.
        embed_dim: width of the shared pixel/text embedding space for the text logits.
        text_logit_init, text_logit_learnable: the scale s of the text logits s · cos(pixel, class).
        dropout: before the learned classifier.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, in_index: Sequence[int] = (1, 2, 3),
                 channels: int = 512, text_dim: int | None = 512, align_heads: int = 8,
                 attention: AlignmentAttention | None = None, embed_dim: int = 256, dropout: float = 0.1,
                 text_logit_init: float = 14.285714, text_logit_learnable: bool = True):
        super().__init__()
        self.in_index = list(in_index)
        self.lateral = nn.ModuleList([conv_bn_relu(in_channels[i], channels) for i in self.in_index])
        self.fuse = conv_bn_relu(channels * len(self.in_index), channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.text_guided = text_dim is not None
        if self.text_guided:
            self.alignment = SemanticAlignmentModule(channels, text_dim, align_heads,
                                                     attention or AlignmentAttention.decoder_default(),
                                                     side="decoder")
            self.pixel_embed = nn.Conv2d(channels, embed_dim, 1)
            self.text_embed = nn.Linear(text_dim, embed_dim)
            self.text_logit_scale = AttentionTemperature(text_logit_init, text_logit_learnable)

    def forward(self, features: Sequence[Tensor], text: Tensor | None = None) -> Tensor:
        size = features[self.in_index[0]].shape[2:]
        levels = [F.interpolate(lateral(features[i]), size=size, mode="bilinear", align_corners=False)
                  for lateral, i in zip(self.lateral, self.in_index)]
        x = self.fuse(torch.cat(levels, dim=1))  # (B, C, H, W)
        if not self.text_guided:
            return self.conv_seg(self.dropout(x))
        if text is None:
            raise ValueError("the text-guided HSG head needs the class text embeddings")
        x = self.alignment(x.permute(0, 2, 3, 1), text).permute(0, 3, 1, 2)
        learned = self.conv_seg(self.dropout(x))
        pixels = F.normalize(self.pixel_embed(x), dim=1)  # (B, E, H, W)
        classes = F.normalize(self.text_embed(text.to(x.dtype)), dim=-1)  # (T, E)
        similarity = torch.einsum("behw,te->bthw", pixels, classes)
        return learned + self.text_logit_scale().to(x.dtype) * similarity
