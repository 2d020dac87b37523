"""`make gpu-check` case for this tool: SAM-Med3D `vit_b_ori` + the ICH heads at 128^3 (random weights,
generated volumes, no downloads), trained as `train.py` trains it: the automatic round and the
recipe's click rounds, DiceCE over rounds + the weighted ICH loss.

size="full": vit_b_ori, 128^3 crops, batch 2 (the recipe's). size="tiny": the CPU test model, 32^3.
`extra`: seconds per sliding-window prediction of a whole volume, automatic and after 10 clicks.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from projects.sam_med3d_ich.bench import generated_batch
from projects.sam_med3d_ich.config import TrainConfig
from projects.sam_med3d_ich.inference import interactive_refinement
from projects.sam_med3d_ich.interaction import ClickRoundsForward
from projects.sam_med3d_ich.model import build_ich_model
from projects.sam_med3d_ich.trainer import dice_ce_loss
from shared.gpu_check import GpuCheckCase

TOOL = "sam_med3d_ich"
SIZES = {
    # size: (model_type, visual_tokens, visual_token_dim, crop, batch, whole volume for `extra`)
    "full": ("vit_b_ori", 256, 768, 128, 2, (256, 256, 160)),
    "tiny": ("tiny", 8, 32, 32, 2, (48, 40, 36)),
}


def make_case(size: str) -> GpuCheckCase:
    model_type, tokens, token_dim, crop, batch, volume = SIZES[size]
    cfg = TrainConfig()
    dice = DiceLoss(sigmoid=True, squared_pred=True, batch=True)

    def build(gradient_checkpointing: bool) -> nn.Module:
        torch.manual_seed(0)
        model = build_ich_model(model_type, tokens, token_dim)
        model.image_encoder.gradient_checkpointing = gradient_checkpointing
        return ClickRoundsForward(model, cfg.num_clicks)

    def make_batch(device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = generated_batch(crop, batch, device)
        return {"image": images, "label": labels, "ich": torch.ones(batch, device=device)}

    def loss(forward: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        round_logits, ich_logit = forward(batch["image"], batch["label"], torch.Generator().manual_seed(0))
        seg = torch.stack([dice_ce_loss(x.float(), batch["label"], dice, cfg.ce_weight) for x in round_logits]).mean()
        return seg + cfg.cls_loss_weight * F.binary_cross_entropy_with_logits(ich_logit.float(), batch["ich"])

    def extra(device: torch.device) -> dict[str, Any]:
        torch.manual_seed(0)
        model = build_ich_model(model_type, tokens, token_dim).to(device).eval()
        image = torch.randn(1, 1, *volume, device=device)
        truth = torch.zeros(volume, dtype=torch.bool, device=device)
        truth[tuple(slice(s // 3, s // 2) for s in volume)] = True

        def timed(num_clicks: int) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            interactive_refinement(model, image, truth, num_clicks, torch.Generator().manual_seed(0), overlap=0.25)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        timed(0)  # warm-up
        shape = "x".join(map(str, volume))
        return {f"sliding_window_s ({shape}, automatic)": timed(0),
                f"sliding_window_s ({shape}, automatic + 10 clicks)": timed(10)}

    name = f"SAM-Med3D {model_type} {crop}^3, batch {batch}, automatic + {cfg.num_clicks} click rounds"
    return GpuCheckCase(tool=TOOL, name=name, build_model=build, make_batch=make_batch, loss=loss,
                        optimizers=("sam", "adamw"), lr=cfg.lr, steps=4, extra=extra,
                        notes=["gradient checkpointing: every encoder block (attention + MLP) and the neck "
                               "(torch.utils.checkpoint); attention by scaled_dot_product_attention"])


def gpu_check_cases(size: str = "full") -> list[GpuCheckCase]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return [make_case(size)]
