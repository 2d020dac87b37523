"""`make gpu-check` cases for this tool: DFormerv2 + the alignment module at full size (random weights,
generated RGB-D batches, no downloads), and the same model without the alignment module.

size="full": DFormerv2-S, NYU Depth v2 shapes (40 classes, 512-d text embeddings), 480×640, batch 4.
size="tiny": the CPU test config (DFormerv2_Tiny, 5 classes, 64×64, batch 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from projects.dformer_sam_attention.models.builder import ModelSettings, build_model
from projects.dformer_sam_attention.utils.dataloader.transforms import IGNORE_INDEX
from shared.gpu_check import GpuCheckCase

TOOL = "dformer_sam_attention"
SIZES = {
    # size: (settings, height, width, batch)
    "full": (ModelSettings(backbone="DFormerv2_S", decoder="hsg", num_classes=40, decoder_embed_dim=512,
                           decoder_align_heads=8, text_embed_dim=256, drop_path_rate=0.25, text_dim=512), 480, 640, 4),
    "tiny": (ModelSettings(backbone="DFormerv2_Tiny", decoder="hsg", num_classes=5, decoder_embed_dim=32,
                           decoder_align_heads=2, text_embed_dim=32, ham_channels=32, drop_path_rate=0.0, text_dim=32),
             64, 64, 2),
}


def make_case(size: str, with_alignment: bool) -> GpuCheckCase:
    base, height, width, batch = SIZES[size]
    settings = ModelSettings(**{**base.__dict__, "text_guidance": with_alignment})

    def build(gradient_checkpointing: bool) -> nn.Module:
        torch.manual_seed(0)
        text = F.normalize(torch.randn(settings.num_classes, settings.text_dim), dim=-1) if with_alignment else None
        return build_model(settings, text, gradient_checkpointing=gradient_checkpointing)

    def make_batch(device: torch.device) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        label = torch.randint(0, settings.num_classes, (batch, height, width), generator=generator)
        label[:, :4] = IGNORE_INDEX  # an unlabelled border, as NYU's
        return {"rgb": torch.randn(batch, 3, height, width, generator=generator).to(device),
                "depth": torch.randn(batch, 1, height, width, generator=generator).to(device),
                "label": label.to(device)}

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["rgb"], batch["depth"])
        return F.cross_entropy(logits.float(), batch["label"], ignore_index=IGNORE_INDEX)

    name = (f"{settings.backbone} {height}x{width} batch {batch}, "
            + ("preset 1 (alignment in encoder + HSG decoder)" if with_alignment else "preset 7 (HSG, no alignment)"))
    return GpuCheckCase(tool=TOOL, name=name, build_model=build, make_batch=make_batch, loss=loss,
                        optimizers=("sam", "adamw"), lr=6e-5, steps=4,
                        notes=["gradient checkpointing: every DFormerv2 encoder block (torch.utils.checkpoint)"])


def gpu_check_cases(size: str = "full") -> list[GpuCheckCase]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return [make_case(size, True), make_case(size, False)]
