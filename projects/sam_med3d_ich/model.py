"""SAM-Med3D (`Sam3D`), its ICH variant with visual-token and classification heads, and the registry.

`sam_model_registry3D["vit_b_ori"]()` has exactly the parameters of the published
`sam_med3d_turbo.pth`; `"tiny"` uses the same classes with small sizes for tests and the demo.
Unlike the original `Sam3D.forward` (no_grad, "bilinear" on 5-D tensors), nothing here disables
gradients and low-res logits are upsampled trilinearly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from projects.sam_med3d_ich.modeling import (
    ICHClassificationHead,
    ImageEncoderViT3D,
    MaskDecoder3D,
    PromptEncoder3D,
    VisualTokenHead,
)
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state

HEAD_PREFIXES = ("representation_head.", "ich_head.")


@dataclass(frozen=True)
class Sam3DArchitecture:
    img_size: int
    patch_size: int
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_heads: int
    decoder_mlp_dim: int
    iou_head_hidden_dim: int

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        return 4 * self.grid_size


ARCHITECTURES = {
    # The 8^3 grid is padded into one 14^3 window in the non-global blocks, as the checkpoint was trained.
    "vit_b_ori": Sam3DArchitecture(img_size=128, patch_size=16, encoder_dim=768, encoder_depth=12, encoder_heads=12,
                                   global_attn_indexes=(2, 5, 8, 11), window_size=14, prompt_dim=384,
                                   mask_in_chans=16, decoder_depth=2, decoder_heads=8, decoder_mlp_dim=2048,
                                   iou_head_hidden_dim=256),
    # prompt_dim: divisible by 3 (sin/cos/sin encoding) and by 2 * decoder_heads (downsampled attention)
    "tiny": Sam3DArchitecture(img_size=32, patch_size=8, encoder_dim=64, encoder_depth=2, encoder_heads=4,
                              global_attn_indexes=(1,), window_size=3, prompt_dim=48, mask_in_chans=16,
                              decoder_depth=2, decoder_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=32),
}


class Sam3D(nn.Module):
    def __init__(self, image_encoder: ImageEncoderViT3D, prompt_encoder: PromptEncoder3D,
                 mask_decoder: MaskDecoder3D) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def decode(self, image_embeddings: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               prior_low_res: torch.Tensor | None = None) -> torch.Tensor:
        """Prompted mask logits at low resolution [B, 1, 4g, 4g, 4g].

        points: (coords [B, N, 3] voxel indices in the crop, labels [B, N] in {1, 0, -1}) or None;
        prior_low_res: the previous round's low-res logits [B, 1, 4g, 4g, 4g] or None."""
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=prior_low_res,
                                            batch_size=image_embeddings.shape[0])
        low_res, _ = self.mask_decoder(image_embeddings=image_embeddings, image_pe=self.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
        return low_res

    def forward(self, images: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
                prior_low_res: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, 1, S, S, S] -> full-resolution mask logits [B, 1, S, S, S]."""
        low_res = self.decode(self.image_encoder(images), points, prior_low_res)
        return upsample_logits(low_res, images.shape[-3:])


class SamMed3DICH(Sam3D):
    """Sam3D plus a visual-token head and an ICH classifier on the image embedding."""

    def __init__(self, image_encoder: ImageEncoderViT3D, prompt_encoder: PromptEncoder3D,
                 mask_decoder: MaskDecoder3D, visual_tokens: int = 256, visual_token_dim: int = 768) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder)
        self.representation_head = VisualTokenHead(prompt_encoder.embed_dim, visual_tokens, visual_token_dim)
        self.ich_head = ICHClassificationHead(visual_token_dim)

    @property
    def head_config(self) -> dict:
        return {"in_dim": self.prompt_encoder.embed_dim, "num_tokens": self.representation_head.num_tokens,
                "token_dim": self.representation_head.token_dim}

    def classify(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> visual tokens [B, T, D], ICH logit [B]."""
        tokens = self.representation_head(image_embeddings)
        return tokens, self.ich_head(tokens)


def upsample_logits(low_res: torch.Tensor, size: tuple[int, int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(low_res, size=tuple(size), mode="trilinear", align_corners=False)


def build_parts(arch: Sam3DArchitecture) -> tuple[ImageEncoderViT3D, PromptEncoder3D, MaskDecoder3D]:
    grid = (arch.grid_size,) * 3
    encoder = ImageEncoderViT3D(img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.encoder_dim,
                                depth=arch.encoder_depth, num_heads=arch.encoder_heads, out_chans=arch.prompt_dim,
                                window_size=arch.window_size, global_attn_indexes=arch.global_attn_indexes)
    prompt_encoder = PromptEncoder3D(arch.prompt_dim, grid, (arch.img_size,) * 3, arch.mask_in_chans)
    decoder = MaskDecoder3D(arch.prompt_dim, transformer_depth=arch.decoder_depth,
                            transformer_heads=arch.decoder_heads, transformer_mlp_dim=arch.decoder_mlp_dim,
                            iou_head_hidden_dim=arch.iou_head_hidden_dim)
    return encoder, prompt_encoder, decoder


def architecture(model_type: str) -> Sam3DArchitecture:
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model_type {model_type!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def _builder(model_type: str):
    def build(checkpoint: str | os.PathLike | None = None) -> Sam3D:
        model = Sam3D(*build_parts(ARCHITECTURES[model_type]))
        if checkpoint is not None:
            load_sam_checkpoint(model, checkpoint)
        return model
    build.__name__ = f"build_sam3d_{model_type}"
    return build


sam_model_registry3D = {name: _builder(name) for name in ARCHITECTURES}


def build_ich_model(model_type: str = "vit_b_ori", visual_tokens: int = 256, visual_token_dim: int = 768,
                    checkpoint: str | os.PathLike | None = None) -> SamMed3DICH:
    model = SamMed3DICH(*build_parts(architecture(model_type)), visual_tokens=visual_tokens,
                        visual_token_dim=visual_token_dim)
    if checkpoint is not None:
        load_sam_checkpoint(model, checkpoint)
    return model


def load_sam_checkpoint(model: Sam3D, checkpoint: str | os.PathLike | dict) -> list[str]:
    """Load SAM-Med3D weights (e.g. `sam_med3d_turbo.pth`, weights under `model_state_dict`, or one of
    our `best_model.pth`). Every Sam3D parameter must be present with its shape; only our heads may be
    absent (they keep their initialisation). Returns the head keys that were not in the file."""
    name = str(checkpoint) if not isinstance(checkpoint, dict) else "state dict"
    obj = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    report = load_model_state(model, obj, strict=False, prefixes_to_strip=("module.",), source_name=name)
    missing_core = [k for k in report.missing if not k.startswith(HEAD_PREFIXES)]
    unexpected = [k for k in report.unexpected if isinstance(model, SamMed3DICH) or not k.startswith(HEAD_PREFIXES)]
    if missing_core or unexpected or report.mismatched:
        report.missing, report.unexpected = missing_core, unexpected
        raise CheckpointError(f"{name}: does not fit {type(model).__name__}: {report.describe()}")
    return [k for k in report.missing if k.startswith(HEAD_PREFIXES)]


def architecture_dict(model_type: str) -> dict:
    return asdict(architecture(model_type))
