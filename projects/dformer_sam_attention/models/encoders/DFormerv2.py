"""DFormerv2 (Yin et al., CVPR 2025): an RGB-D encoder whose self-attention carries a geometry prior.

Each attention map gets an additive decay built from the Manhattan distance between tokens and from
their depth difference, mixed by a learnable 2-vector; Q and K are rotated (RoPE over the flattened
token index); a depthwise 5×5 conv on V adds a local positional term (LePE). Stages 0–2 attend along
rows then columns (decomposed), stage 3 attends over all tokens.

Module and parameter names follow the public checkpoints (`patch_embed.proj.N`, `layers.i.blocks.j.
Attention.q_proj`, `...Geo.angle`, `extra_norms.i`), so the ImageNet-pretrained weights load
(`load_pretrained_backbone`). Two differences from the public code, both intended: BatchNorm is plain
`nn.BatchNorm2d` (convert to SyncBatchNorm under torchrun), and an optional Semantic Alignment Module
may follow any stage (`sam_stages`), built here in `__init__` so the optimizer sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from projects.dformer_sam_attention.models.blocks.semantic_alignment import (
    AlignmentAttention,
    SemanticAlignmentModule,
)

GeometryPrior = tuple[tuple[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]


class DWConv2d(nn.Module):
    """Depthwise conv on channels-last maps: (B, H, W, C) → (B, H, W, C)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Convolutional stem, stride 4: (B, 3, H, W) → (B, H/4, W/4, C)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        half = embed_dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.GELU(),
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1), nn.BatchNorm2d(embed_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class PatchMerging(nn.Module):
    """Stride-2 conv + BN between stages: (B, H, W, C) → (B, H/2, W/2, C_out)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


def rotate_every_two(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """RoPE on the last dim, pairs (x0, x1), (x2, x3), ...; sin/cos broadcast against x."""
    x_even, x_odd = x[..., ::2], x[..., 1::2]
    rotated = torch.stack([-x_odd, x_even], dim=-1).flatten(-2)
    return x * cos + rotated * sin


class GeoPriorGen(nn.Module):
    """Builds the rotary angles and the geometry decay masks for one block.

    decay_h = log(1 − 2^(−init − range·h/heads)) < 0, so far-apart (in space or depth) tokens get
    more negative logits; `weight` mixes the spatial and the depth term.
    """

    def __init__(self, embed_dim: int, num_heads: int, initial_value: float, heads_range: float):
        super().__init__()
        head_dim = embed_dim // num_heads
        angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 2))
        self.register_buffer("angle", angle.repeat_interleave(2))  # (head_dim,)
        heads = torch.arange(num_heads, dtype=torch.float32)
        self.register_buffer("decay", torch.log(1 - 2 ** (-initial_value - heads_range * heads / num_heads)))
        self.weight = nn.Parameter(torch.ones(2, 1, 1, 1))

    def rotary(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(height * width, device=self.decay.device, dtype=self.decay.dtype)
        phase = (index[:, None] * self.angle[None, :]).view(height, width, -1)
        return phase.sin(), phase.cos()  # (H, W, head_dim) each

    def line_decay(self, length: int) -> Tensor:
        """(heads, L, L): |i − j| · decay along one axis."""
        index = torch.arange(length, device=self.decay.device, dtype=self.decay.dtype)
        return (index[:, None] - index[None, :]).abs() * self.decay[:, None, None]

    def line_depth_decay(self, depth_lines: Tensor) -> Tensor:
        """depth_lines (B, M, L) → (B, heads, M, L, L): |d_i − d_j| · decay within each line."""
        diff = (depth_lines[..., :, None] - depth_lines[..., None, :]).abs()
        return diff[:, None] * self.decay[None, :, None, None, None]

    def forward(self, height: int, width: int, depth: Tensor, decomposed: bool) -> GeometryPrior:
        """depth (B, 1, H0, W0) → ((sin, cos), mask) for a (height × width) token grid.

        decomposed: mask = (mask_h (B, heads, W, H, H), mask_w (B, heads, H, W, W));
        full: mask (B, heads, HW, HW).
        """
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        w_pos, w_depth = self.weight[0], self.weight[1]
        if decomposed:
            mask_w = w_pos * self.line_decay(width)[None, :, None] + w_depth * self.line_depth_decay(depth)
            mask_h = (w_pos * self.line_decay(height)[None, :, None]
                      + w_depth * self.line_depth_decay(depth.transpose(1, 2)))
            return self.rotary(height, width), (mask_h, mask_w)
        rows = torch.arange(height, device=depth.device, dtype=depth.dtype)
        cols = torch.arange(width, device=depth.device, dtype=depth.dtype)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).view(-1, 2)  # (HW, 2)
        manhattan = (grid[:, None] - grid[None]).abs().sum(-1)  # (HW, HW)
        depth_flat = depth.reshape(depth.shape[0], -1)
        depth_diff = (depth_flat[:, :, None] - depth_flat[:, None, :]).abs()  # (B, HW, HW)
        mask = (w_pos * manhattan[None, None] * self.decay[None, :, None, None]
                + w_depth * depth_diff[:, None] * self.decay[None, :, None, None])
        return self.rotary(height, width), mask


def line_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """Attention within lines: q, k, v (B, h, M, L, d), mask (B, h, M, L, L) → (B, h, M, L, d)."""
    batch, heads, lines, length, dim = q.shape

    def fold(t: Tensor) -> Tensor:
        return t.reshape(batch, heads * lines, length, -1)

    mask = mask.expand(batch, heads, lines, length, length)
    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=fold(mask), scale=scale)
    return out.view(batch, heads, lines, length, dim)


class GeometrySelfAttention(nn.Module):
    """Geometry self-attention, decomposed (rows then columns) or full. (B, H, W, C) → (B, H, W, C)."""

    def __init__(self, embed_dim: int, num_heads: int, decomposed: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.decomposed = decomposed
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.lepe = DWConv2d(embed_dim, 5)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_normal_(proj.weight, gain=2**-2.5)
        nn.init.xavier_normal_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        return x.view(batch, height, width, self.num_heads, self.head_dim).permute(0, 3, 1, 2, 4)

    def forward(self, x: Tensor, prior: GeometryPrior) -> Tensor:
        batch, height, width, channels = x.shape
        (sin, cos), mask = prior
        v_flat = self.v_proj(x)
        lepe = self.lepe(v_flat)
        v = self.split_heads(v_flat)
        sin, cos = sin.to(v.dtype), cos.to(v.dtype)  # keep q, k in the autocast dtype of v
        q = rotate_every_two(self.split_heads(self.q_proj(x)), sin, cos)  # (B, h, H, W, d)
        k = rotate_every_two(self.split_heads(self.k_proj(x)), sin, cos)
        scale = self.head_dim**-0.5
        if self.decomposed:
            mask_h, mask_w = mask
            # along each row (over W), then along each column (over H) of the row-mixed values;
            # lines are folded into the batch so the attention calls stay 4-D (fused kernels)
            v = line_attention(q, k, v, mask_w.to(q.dtype), scale)
            q_t, k_t, v_t = (t.transpose(2, 3) for t in (q, k, v))  # (B, h, W, H, d)
            out = line_attention(q_t, k_t, v_t, mask_h.to(q.dtype), scale).transpose(2, 3)  # (B, h, H, W, d)
        else:
            out = F.scaled_dot_product_attention(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3),
                                                 attn_mask=mask.to(q.dtype), scale=scale)
            out = out.view(batch, self.num_heads, height, width, self.head_dim)
        out = out.permute(0, 2, 3, 1, 4).reshape(batch, height, width, channels)
        return self.out_proj(out + lepe)


class FeedForwardNetwork(nn.Module):
    """fc1 → GELU → (+ depthwise 3×3 conv residual) → fc2, channels-last."""

    def __init__(self, embed_dim: int, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.dwconv = DWConv2d(ffn_dim, 3)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class RGBDBlock(nn.Module):
    """Conv position term, then pre-norm geometry attention and FFN, each with optional layerscale."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, decomposed: bool, drop_path: float,
                 layerscale: bool, layer_init_value: float, init_value: float, heads_range: float):
        super().__init__()
        self.decomposed = decomposed
        self.layer_norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.layer_norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.Attention = GeometrySelfAttention(embed_dim, num_heads, decomposed)
        self.ffn = FeedForwardNetwork(embed_dim, ffn_dim)
        self.cnn_pos_encode = DWConv2d(embed_dim, 3)
        self.Geo = GeoPriorGen(embed_dim, num_heads, init_value, heads_range)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.layerscale = layerscale
        if layerscale:
            self.gamma_1 = nn.Parameter(torch.full((1, 1, 1, embed_dim), layer_init_value))
            self.gamma_2 = nn.Parameter(torch.full((1, 1, 1, embed_dim), layer_init_value))

    def forward(self, x: Tensor, depth: Tensor) -> Tensor:
        x = x + self.cnn_pos_encode(x)
        _, height, width, _ = x.shape
        prior = self.Geo(height, width, depth, self.decomposed)
        attn = self.Attention(self.layer_norm1(x), prior)
        x = x + self.drop_path(self.gamma_1 * attn if self.layerscale else attn)
        ffn = self.ffn(self.layer_norm2(x))
        return x + self.drop_path(self.gamma_2 * ffn if self.layerscale else ffn)


class BasicLayer(nn.Module):
    """One stage: `depth` blocks, then (except the last stage) a PatchMerging downsample."""

    def __init__(self, embed_dim: int, out_dim: int | None, depth: int, num_heads: int, init_value: float,
                 heads_range: float, ffn_dim: int, drop_paths: Sequence[float], decomposed: bool,
                 layerscale: bool, layer_init_value: float):
        super().__init__()
        self.blocks = nn.ModuleList([
            RGBDBlock(embed_dim, num_heads, ffn_dim, decomposed, drop_paths[i], layerscale,
                      layer_init_value, init_value, heads_range)
            for i in range(depth)
        ])
        self.downsample = PatchMerging(embed_dim, out_dim) if out_dim is not None else None
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, depth: Tensor) -> Tensor:
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            # checkpointed: the block's activations (attention maps, geometry masks) are recomputed in
            # the backward pass instead of stored; the RNG state is replayed, so drop path is identical
            x = checkpoint(block, x, depth, use_reentrant=False) if recompute else block(x, depth)
        return x


class DFormerv2(nn.Module):
    """DFormerv2 encoder. forward(rgb (B, 3, H, W), depth (B, ≥1, H, W)) → 4 maps (B, C_i, H/2^(i+2), W/2^(i+2)).

    Args:
        embed_dims, depths, num_heads, heads_ranges, mlp_ratios, init_values: per stage.
        layerscales: per stage, whether blocks scale their residual branches by learned gammas.
        layer_init_value: initial gamma.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        sam_stages: stages followed by an encoder-side Semantic Alignment Module (`forward_ssa`).
        text_dim: width of the class text embeddings (needed when `sam_stages` is not empty).
        sam_attention: how the encoder-side alignment attends.
        gradient_checkpointing: recompute each block's activations in the backward pass (less memory,
            about one more forward of compute); outputs and gradients are unchanged.
    """

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
                 heads_ranges: Sequence[float], mlp_ratios: Sequence[float] = (4, 4, 3, 3),
                 init_values: Sequence[float] = (2, 2, 2, 2),
                 layerscales: Sequence[bool] = (False, False, False, False), layer_init_value: float = 1e-6,
                 drop_path_rate: float = 0.1, sam_stages: Sequence[int] = (), text_dim: int = 512,
                 sam_attention: AlignmentAttention | None = None, gradient_checkpointing: bool = False):
        super().__init__()
        num_stages = len(depths)
        self.embed_dims = list(embed_dims)
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        total_blocks = sum(depths)
        drop_paths = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(BasicLayer(
                embed_dim=embed_dims[i],
                out_dim=embed_dims[i + 1] if i < num_stages - 1 else None,
                depth=depths[i], num_heads=num_heads[i], init_value=init_values[i],
                heads_range=heads_ranges[i], ffn_dim=int(mlp_ratios[i] * embed_dims[i]),
                drop_paths=drop_paths[start:start + depths[i]],
                decomposed=i != num_stages - 1,  # full attention only in the last, smallest stage
                layerscale=layerscales[i], layer_init_value=layer_init_value,
            ))
        self.extra_norms = nn.ModuleList([nn.LayerNorm(dim) for dim in embed_dims[1:]])
        self.apply(_init_linear_and_norm)

        self.sam_stages = sorted(set(sam_stages))
        if any(not 0 <= s < num_stages for s in self.sam_stages):
            raise ValueError(f"sam_stages must lie in 0..{num_stages - 1}, got {list(sam_stages)}")
        attention = sam_attention or AlignmentAttention.encoder_default()
        # created here, before any optimizer exists, so they are trained and checkpointed
        self.semantic_alignment = nn.ModuleDict({
            str(s): SemanticAlignmentModule(embed_dims[s], text_dim, num_heads[s], attention, side="encoder")
            for s in self.sam_stages
        })
        self.set_gradient_checkpointing(gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for layer in self.layers:
            layer.gradient_checkpointing = enabled

    def forward(self, rgb: Tensor, depth: Tensor, text: Tensor | None = None) -> list[Tensor]:
        if self.sam_stages and text is None:
            raise ValueError("this encoder has alignment modules in stages "
                             f"{self.sam_stages}; pass the class text embeddings")
        depth = depth[:, :1]  # only the first depth channel carries geometry
        x = self.patch_embed(rgb)  # (B, H/4, W/4, C0)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, depth)
            if str(i) in self.semantic_alignment:
                x = self.semantic_alignment[str(i)].forward_ssa(x, text)
            out = self.extra_norms[i - 1](x) if i > 0 else x
            outs.append(out.permute(0, 3, 1, 2).contiguous())
            if layer.downsample is not None:
                x = layer.downsample(x)
        return outs


def _init_linear_and_norm(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def DFormerv2_S(**kwargs) -> DFormerv2:
    return DFormerv2(embed_dims=(64, 128, 256, 512), depths=(3, 4, 18, 4), num_heads=(4, 4, 8, 16),
                     heads_ranges=(4, 4, 6, 6), **kwargs)


def DFormerv2_B(**kwargs) -> DFormerv2:
    return DFormerv2(embed_dims=(80, 160, 320, 512), depths=(4, 8, 25, 8), num_heads=(5, 5, 10, 16),
                     heads_ranges=(5, 5, 6, 6), layerscales=(False, False, True, True), **kwargs)


def DFormerv2_L(**kwargs) -> DFormerv2:
    return DFormerv2(embed_dims=(112, 224, 448, 640), depths=(4, 8, 25, 8), num_heads=(7, 7, 14, 20),
                     heads_ranges=(6, 6, 6, 6), layerscales=(False, False, True, True), **kwargs)


def DFormerv2_Tiny(**kwargs) -> DFormerv2:
    """CPU-sized variant for tests and the demo (same code path, ~0.2M parameters)."""
    return DFormerv2(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4),
                     heads_ranges=(4, 4, 6, 6), **kwargs)


BACKBONES = {"DFormerv2_S": DFormerv2_S, "DFormerv2_B": DFormerv2_B, "DFormerv2_L": DFormerv2_L,
             "DFormerv2_Tiny": DFormerv2_Tiny}


MIN_PRETRAINED_FRACTION = 0.95


def load_pretrained_backbone(encoder: DFormerv2, path: str | Path, allow_partial: bool = False):
    """Load published ImageNet weights (keys may carry `backbone.`/`module.`).

    The alignment modules are not pretrained and are left out of the count. Any shape mismatch,
    or fewer than 95% of the encoder's own tensors found in the file (e.g. B weights into S, or
    a file of another model), raises `CheckpointError` naming the file and the first mismatches,
    unless `allow_partial`; then what fits is loaded and the report says what did not.
    Returns the report of `shared.checkpoint.load_model_state`.
    """
    from shared.checkpoint import CheckpointError, load_model_state

    report = load_model_state(encoder, path, strict=False, prefixes_to_strip=("module.", "backbone."))
    own = [k for k in encoder.state_dict() if not k.startswith("semantic_alignment.")]
    bad = set(report.missing) | {k for k, _, _ in report.mismatched}
    loaded = sum(k not in bad for k in own)
    if not allow_partial and (report.mismatched or loaded < MIN_PRETRAINED_FRACTION * len(own)):
        raise CheckpointError(f"{path}: does not fit this encoder ({loaded} of {len(own)} tensors load; "
                              f"{report.describe(limit=3)}); pass the weights of the same model size, "
                              "or --allow_partial_pretrained to load what fits")
    return report

