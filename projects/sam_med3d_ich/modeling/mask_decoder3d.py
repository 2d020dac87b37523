"""3D mask decoder: output tokens + prompt tokens through the two-way transformer, image tokens
upscaled 4x, one mask per mask token by a hypernetwork dot product."""

from __future__ import annotations

import torch
from torch import nn

from projects.sam_med3d_ich.modeling.common import MLP, LayerNorm3d
from projects.sam_med3d_ich.modeling.transformer3d import TwoWayTransformer3D


class MaskDecoder3D(nn.Module):
    def __init__(self, transformer_dim: int = 384, num_multimask_outputs: int = 3, transformer_depth: int = 2,
                 transformer_heads: int = 8, transformer_mlp_dim: int = 2048, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer3D(transformer_depth, transformer_dim, transformer_heads,
                                               transformer_mlp_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings [B, C, g, g, g], image_pe [1, C, g, g, g], sparse [B, N, C],
        dense [B, C, g, g, g] -> masks [B, M, 4g, 4g, 4g], iou [B, M] (M = 1, or 3 with
        multimask_output). As in SAM-Med3D, one image embedding serves several prompt sets."""
        if image_embeddings.shape[0] != sparse_prompt_embeddings.shape[0]:
            image_embeddings = image_embeddings.repeat_interleave(sparse_prompt_embeddings.shape[0], dim=0)
        batch, channels, *grid = image_embeddings.shape
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1),
                            sparse_prompt_embeddings.to(output_tokens.dtype)], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        pos = image_pe.expand(batch, -1, -1, -1, -1)
        hidden, src = self.transformer(src, pos, tokens)
        iou_token_out = hidden[:, 0]
        mask_tokens_out = hidden[:, 1:1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, channels, *grid))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # [B, M_all, C/8]
        b, c, *up_grid = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, -1)).reshape(b, -1, *up_grid)
        iou_pred = self.iou_prediction_head(iou_token_out)

        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]
