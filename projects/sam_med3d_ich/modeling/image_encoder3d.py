"""3D ViT image encoder of SAM-Med3D: patchify, ViT blocks with decomposed 3D relative positions and
(padded) window attention, then a conv neck to the prompt dimension.

Parameter names and shapes follow the published `sam_med3d_turbo.pth`, so its weights load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from projects.sam_med3d_ich.modeling.common import LayerNorm3d, MLPBlock


class PatchEmbed3D(nn.Module):
    """[B, C_in, D, H, W] -> [B, D/p, H/p, W/p, C] with one strided Conv3d."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


def relative_position_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """Embeddings for every (query, key) offset along one axis: [size, size, C].

    `table` holds 2*L-1 rows for the length L it was trained with; other lengths are interpolated.
    """
    rows = 2 * size - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.T[None], size=rows, mode="linear")[0].T
    offsets = torch.arange(size, device=table.device)[:, None] - torch.arange(size, device=table.device)[None, :]
    return table[offsets + size - 1]


class Attention3D(nn.Module):
    """Multi-head self-attention over a [B, D, H, W, C] token grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = True,
                 rel_pos_size: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if rel_pos_size is None:
                raise ValueError("relative positions need the token grid size")
            self.rel_pos_d = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, head_dim))
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[2] - 1, head_dim))

    def forward(self, x: torch.Tensor, query_grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """x [B, D, H, W, C] -> [B, d, h, w, C]: every token attends to all of x; only the queries in
        the leading `query_grid` corner (default: all) are computed. A window padded around a smaller
        grid needs no output for its padding tokens: skipping them gives the same real outputs."""
        batch, d, h, w, dim = x.shape
        qd, qh, qw = query_grid or (d, h, w)
        qkv = self.qkv(x).reshape(batch, d, h, w, 3, self.num_heads, -1)
        q = qkv[:, :qd, :qh, :qw, 0].reshape(batch, qd * qh * qw, self.num_heads, -1).transpose(1, 2)
        k, v = qkv[..., 1:, :, :].reshape(batch, d * h * w, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # q [B, heads, Nq, head_dim], k/v [B, heads, N, head_dim]
        bias = self._relative_position_bias(q, (qd, qh, qw), (d, h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(q k^T / sqrt(hd) + bias) v
        out = out.transpose(1, 2).reshape(batch, qd, qh, qw, dim)
        return self.proj(out)

    def _relative_position_bias(self, q: torch.Tensor, q_grid: tuple[int, int, int],
                                k_grid: tuple[int, int, int]) -> torch.Tensor:
        """MViTv2's decomposed bias: q . R_d[dq, dk] + q . R_h[hq, hk] + q . R_w[wq, wk] -> [B, heads, Nq, Nk]."""
        (d, h, w), (kd, kh, kw) = q_grid, k_grid
        batch, heads, n, head_dim = q.shape
        q_grid_t = q.reshape(batch * heads, d, h, w, head_dim)
        tables = [relative_position_table(size, table)[:qsize].to(q.dtype) for size, qsize, table in
                  ((kd, d, self.rel_pos_d), (kh, h, self.rel_pos_h), (kw, w, self.rel_pos_w))]
        rel_d = torch.einsum("bdhwc,dkc->bdhwk", q_grid_t, tables[0])
        rel_h = torch.einsum("bdhwc,hkc->bdhwk", q_grid_t, tables[1])
        rel_w = torch.einsum("bdhwc,wkc->bdhwk", q_grid_t, tables[2])
        bias = (rel_d[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :])
        return bias.reshape(batch, heads, n, kd * kh * kw)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[B, D, H, W, C] -> [B * windows, window, window, window, C], zero-padding each axis up to a multiple."""
    batch, d, h, w, channels = x.shape
    pads = [(window - size % window) % window for size in (d, h, w)]
    if any(pads):
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
    x = x.view(batch, dp // window, window, hp // window, window, wp // window, window, channels)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window, window, window, channels)
    return windows, (dp, hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int, int],
                       original: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `window_partition`, dropping the padding."""
    dp, hp, wp = padded
    d, h, w = original
    batch = windows.shape[0] // ((dp // window) * (hp // window) * (wp // window))
    x = windows.view(batch, dp // window, hp // window, wp // window, window, window, window, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(batch, dp, hp, wp, -1)
    return x[:, :d, :h, :w].contiguous()


class Block3D(nn.Module):
    """Pre-norm ViT block; `window_size > 0` attends inside (padded) cubes, 0 attends globally."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, use_rel_pos: bool,
                 window_size: int, grid_size: tuple[int, int, int], norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        rel_pos_size = grid_size if window_size == 0 else (window_size,) * 3
        self.attn = Attention3D(dim, num_heads, qkv_bias, use_rel_pos, rel_pos_size)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        grid = tuple(x.shape[1:4])
        if self.window_size > 0 and max(grid) <= self.window_size:
            # one (padded) window, as SAM-Med3D's 8^3 grid in a 14^3 window: all tokens are keys, only
            # the real ones are queries (the padding's outputs are cut off anyway) - 5x less attention
            padded, _ = window_partition(x, self.window_size)
            x = self.attn(padded, query_grid=grid)
        elif self.window_size > 0:
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, grid)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT3D(nn.Module):
    """[B, in_chans, S, S, S] volume -> [B, out_chans, S/p, S/p, S/p] image embedding."""

    def __init__(self, img_size: int = 128, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 384,
                 qkv_bias: bool = True, use_rel_pos: bool = True, window_size: int = 14,
                 global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3D(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block3D(embed_dim, num_heads, mlp_ratio, qkv_bias, use_rel_pos,
                    window_size=0 if i in global_attn_indexes else window_size, grid_size=(grid,) * 3)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != (self.img_size,) * 3:
            raise ValueError(f"the image encoder takes {self.img_size}^3 crops, got {tuple(x.shape[-3:])}")
        x = self.patch_embed(x) + self.pos_embed  # [B, g, g, g, C]
        # gradient checkpointing: each block (attention and MLP) and the neck keep only their input for
        # backward and recompute the rest, so activations are held for one block at a time
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        x = x.permute(0, 4, 1, 2, 3)
        return checkpoint(self.neck, x, use_reentrant=False) if recompute else self.neck(x)  # [B, out, g, g, g]
