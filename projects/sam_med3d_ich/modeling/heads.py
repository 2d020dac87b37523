"""Heads on the image embedding: a fixed number of visual tokens (for a Q-Former / LLM bridge) and
an ICH-present classifier on their mean.

Why learned-query cross-attention: the encoder's grid has g^3 cells (512 at 128^3, patch 16), which
is not the 256 tokens a BLIP-2 Q-Former consumes, and it changes with the crop size. A set of
learned queries that attends once to all grid cells (Perceiver-resampler style) gives exactly
`num_tokens` tokens of any width for any grid, keeps every cell reachable (pooling would average
small bleeds away) and costs one attention layer.
"""

from __future__ import annotations

import torch
from torch import nn


def attention_heads_for(width: int) -> int:
    """64-wide heads when the width allows it, otherwise one head."""
    return width // 64 if width % 64 == 0 else 1


class VisualTokenHead(nn.Module):
    """[B, C, g, g, g] image embedding -> [B, num_tokens, token_dim]."""

    def __init__(self, in_dim: int, num_tokens: int = 256, token_dim: int = 768, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.queries = nn.Parameter(torch.randn(num_tokens, token_dim) * 0.02)
        self.key_proj = nn.Linear(in_dim, token_dim)
        self.key_norm = nn.LayerNorm(token_dim)
        self.query_norm = nn.LayerNorm(token_dim)
        self.cross_attn = nn.MultiheadAttention(token_dim, attention_heads_for(token_dim), batch_first=True)
        self.mlp_norm = nn.LayerNorm(token_dim)
        self.mlp = nn.Sequential(nn.Linear(token_dim, int(token_dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(token_dim * mlp_ratio), token_dim))
        self.out_norm = nn.LayerNorm(token_dim)

    def forward(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        keys = self.key_norm(self.key_proj(image_embeddings.flatten(2).transpose(1, 2)))  # [B, g^3, D]
        queries = self.query_norm(self.queries).unsqueeze(0).expand(keys.shape[0], -1, -1)
        tokens = queries + self.cross_attn(queries, keys, keys, need_weights=False)[0]
        tokens = tokens + self.mlp(self.mlp_norm(tokens))
        return self.out_norm(tokens)


class ICHClassificationHead(nn.Module):
    """Mean of the visual tokens -> one logit for "haemorrhage present"."""

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(token_dim)
        self.fc = nn.Linear(token_dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(tokens.mean(dim=1))).squeeze(-1)  # [B]
