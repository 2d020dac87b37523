"""3D prompt encoder: clicks -> sparse tokens, previous low-res logits -> dense embedding.

`forward(points, boxes, masks)` is SAM-Med3D's call, so its inference loops run on this module.
Boxes are refused: SAM-Med3D's box path indexes point embeddings its checkpoints do not have.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from projects.sam_med3d_ich.modeling.common import LayerNorm3d

POSITIVE, NEGATIVE, PADDING = 1, 0, -1  # click labels


class PositionEmbeddingRandom3D(nn.Module):
    """Random Fourier features of coordinates in [0, 1]^3; output width 3 * num_pos_feats."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, num_pos_feats))

    def encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """[..., 3] in [0, 1] -> [..., 3 * F]."""
        projected = 2 * math.pi * ((2 * unit_coords - 1) @ self.positional_encoding_gaussian_matrix)
        # sin, cos, sin: the published checkpoints fill the third third with sin again
        return torch.cat([projected.sin(), projected.cos(), projected.sin()], dim=-1)

    def dense(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Encoding of every cell centre of a grid: [3F, D, H, W]."""
        device = self.positional_encoding_gaussian_matrix.device
        d, h, w = torch.meshgrid(*[(torch.arange(n, device=device) + 0.5) / n for n in size], indexing="ij")
        # SAM-Med3D stacks the grid as (h, d, w) while clicks are (d, h, w); its weights were trained
        # with that order, so the dense encoding keeps it for published checkpoints to behave as trained.
        return self.encode(torch.stack([h, d, w], dim=-1)).permute(3, 0, 1, 2)


class PromptEncoder3D(nn.Module):
    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int, int],
                 input_image_size: tuple[int, int, int], mask_in_chans: int = 16) -> None:
        super().__init__()
        if embed_dim % 3:
            raise ValueError(f"the prompt embedding dim must be divisible by 3, got {embed_dim}")
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(2)])  # neg, pos
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(  # 4x smaller: low-res logits grid -> embedding grid
            nn.Conv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def mask_input_size(self) -> tuple[int, int, int]:
        return tuple(4 * s for s in self.image_embedding_size)

    def get_dense_pe(self) -> torch.Tensor:
        """[1, C, g, g, g] positional encoding of the image embedding grid."""
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords [B, N, 3] voxel indices (d, h, w) in the input crop, labels [B, N] in {1, 0, -1}
        -> [B, N + 1, C]; one padding point is appended, as the published model was trained with."""
        batch = coords.shape[0]
        coords = torch.cat([coords.float() + 0.5, coords.new_zeros(batch, 1, 3).float()], dim=1)
        labels = torch.cat([labels.long(), labels.new_full((batch, 1), PADDING).long()], dim=1)
        size = torch.tensor(self.input_image_size, dtype=torch.float32, device=coords.device)
        encoding = self.pe_layer.encode(coords / size)
        is_pad = (labels == PADDING).unsqueeze(-1)
        # torch.where keeps every embedding in the graph (DDP needs each parameter used every step)
        return (torch.where(is_pad, torch.zeros_like(encoding), encoding)
                + is_pad * self.not_a_point_embed.weight
                + (labels == NEGATIVE).unsqueeze(-1) * self.point_embeddings[0].weight
                + (labels == POSITIVE).unsqueeze(-1) * self.point_embeddings[1].weight)

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor] | None = None,
                boxes: torch.Tensor | None = None, masks: torch.Tensor | None = None, *,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM-Med3D's signature -> sparse [B, N(+1), C] (empty when no points), dense [B, C, g, g, g].

        points: (coords [B, N, 3], labels [B, N]) or None; masks: previous low-res logits
        [B, 1, 4g, 4g, 4g] or None; batch_size: B when there is no prompt at all (SAM-Med3D uses 1)."""
        if boxes is not None:
            raise ValueError("box prompts are not supported: SAM-Med3D's box path needs point embeddings "
                             "that its checkpoints do not have; use point prompts")
        if batch_size is None:
            batch_size = points[0].shape[0] if points is not None else masks.shape[0] if masks is not None else 1
        device = self.no_mask_embed.weight.device
        if points is None:
            sparse = torch.empty(batch_size, 0, self.embed_dim, device=device)
        else:
            sparse = self.embed_points(*points)
        if masks is None:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(batch_size, -1, *self.image_embedding_size)
        else:
            dense = self.mask_downscaling(masks)
        return sparse, dense
