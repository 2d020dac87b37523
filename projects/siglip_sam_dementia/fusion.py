"""Pooling of variable numbers of windows per recording, and the two learned fusion modules."""

from __future__ import annotations

import torch
from torch import nn


def to_padded(windows: torch.Tensor, owner: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) window embeddings with owner[n] in [0, B) -> (B, W, D) padded and a (B, W) bool mask."""
    counts = torch.bincount(owner, minlength=batch_size)  # (B,)
    width = max(int(counts.max()), 1)
    order = torch.argsort(owner, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(owner), device=owner.device) - starts[owner[order]]  # position within its recording
    padded = windows.new_zeros(batch_size, width, windows.shape[-1])
    padded[owner[order], slot] = windows[order]
    mask = torch.arange(width, device=owner.device)[None, :] < counts[:, None]
    return padded, mask


def masked_mean(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, W, D), (B, W) -> (B, D): mean over each recording's real windows only."""
    weights = mask.to(padded.dtype).unsqueeze(-1)
    return (padded * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class GatedFusion(nn.Module):
    """g * audio + (1 - g) * text in a shared space, the gate computed from both pooled embeddings."""

    def __init__(self, audio_dim: int, text_dim: int, fused_dim: int):
        super().__init__()
        self.audio_proj = nn.Linear(audio_dim, fused_dim)
        self.text_proj = nn.Linear(text_dim, fused_dim)
        self.gate = nn.Linear(2 * fused_dim, fused_dim)

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        a = self.audio_proj(masked_mean(audio, audio_mask))  # (B, F)
        t = self.text_proj(masked_mean(text, text_mask))  # (B, F)
        g = torch.sigmoid(self.gate(torch.cat([a, t], dim=-1)))
        return g * a + (1 - g) * t  # (B, F)


class CrossAttentionFusion(nn.Module):
    """Text windows attend to audio windows and audio windows to text windows; both are then pooled.

    Works at window level (a window is a few seconds of speech or 64 tokens of transcript), so a
    recording with many windows can align its talk with its pauses.
    """

    def __init__(self, audio_dim: int, text_dim: int, fused_dim: int, num_heads: int = 4):
        super().__init__()
        self.audio_proj = nn.Linear(audio_dim, fused_dim)
        self.text_proj = nn.Linear(text_dim, fused_dim)
        self.text_to_audio = nn.MultiheadAttention(fused_dim, num_heads, batch_first=True)
        self.audio_to_text = nn.MultiheadAttention(fused_dim, num_heads, batch_first=True)
        self.text_norm = nn.LayerNorm(fused_dim)
        self.audio_norm = nn.LayerNorm(fused_dim)

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        a = self.audio_proj(audio)  # (B, Wa, F)
        t = self.text_proj(text)  # (B, Wt, F)
        t_attended, _ = self.text_to_audio(t, a, a, key_padding_mask=~audio_mask, need_weights=False)
        a_attended, _ = self.audio_to_text(a, t, t, key_padding_mask=~text_mask, need_weights=False)
        t = self.text_norm(t + t_attended)
        a = self.audio_norm(a + a_attended)
        return torch.cat([masked_mean(a, audio_mask), masked_mean(t, text_mask)], dim=-1)  # (B, 2F)
