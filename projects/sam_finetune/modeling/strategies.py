"""The three fine-tuning strategies, what each trains, and how each is exported.

full    — trains whatever the three freeze flags leave trainable.
adapter — bottleneck adapters in every encoder block; the encoder's own weights frozen.
lora    — PEFT LoRA on the encoder's attention linears; the encoder's own weights frozen.
For adapter and lora, `freeze_prompt_encoder` / `freeze_mask_decoder` still decide the rest.

Exports: `stock_sam_state_dict` is a bare state dict that `sam_model_registry[type](checkpoint=...)`
(or `build_sam_tiny`) loads strictly: for full and LoRA (merged) it is exactly the fine-tuned model.
Adapters are non-linear and have no place in a stock `Sam`, so for the adapter strategy this file
holds the frozen encoder plus the fine-tuned prompt encoder / mask decoder, and the adapters live
only in the strategy file; `load_finetuned` puts the two together.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraModel
from segment_anything.modeling import Sam
from torch import nn

from projects.sam_finetune.config import AdapterConfig, FinetuneConfig
from projects.sam_finetune.modeling.adapters import add_adapters, is_adapter_parameter, remove_adapters
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.modeling.checkpointing import enable_gradient_checkpointing
from projects.sam_finetune.modeling.lora import add_lora, lora_module_names, lora_state_dict, merged_sam
from projects.sam_finetune.preprocess import PREPROCESSING_FILE, Preprocessing, set_sam_normalization

log = logging.getLogger(__name__)


@dataclass
class FinetunedSam:
    sam: Sam  # the model that trains (adapters / LoRA layers inside its encoder)
    strategy: str
    model_type: str
    strategy_config: dict[str, Any] = field(default_factory=dict)
    lora_model: LoraModel | None = None  # PEFT's handle on `sam`, for merging (not a submodule)

    @property
    def encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.sam.image_encoder.parameters())


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


def apply_strategy(sam: Sam, cfg: FinetuneConfig) -> FinetunedSam:
    """Insert the strategy's modules into `sam` (in place) and set what trains."""
    strategy, model_cfg = cfg.finetuning.strategy, cfg.model
    _set_trainable(sam, False)
    lora_model, strategy_config = None, {}
    if strategy == "full":
        _set_trainable(sam.image_encoder, not model_cfg.freeze_image_encoder)
    elif strategy == "adapter":
        if not model_cfg.freeze_image_encoder:
            log.info("adapter strategy: the image encoder's own weights stay frozen (only adapters train)")
        add_adapters(sam.image_encoder, cfg.finetuning.adapter)
        for name, p in sam.image_encoder.named_parameters():
            p.requires_grad_(is_adapter_parameter(name))
        strategy_config = copy.deepcopy(vars(cfg.finetuning.adapter))
    elif strategy == "lora":
        if not model_cfg.freeze_image_encoder:
            log.info("lora strategy: the image encoder's own weights stay frozen (only LoRA trains)")
        lora_model = add_lora(sam, cfg.finetuning.lora)
        for name, p in sam.named_parameters():
            p.requires_grad_("lora_" in name)
        strategy_config = copy.deepcopy(vars(cfg.finetuning.lora))
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    _set_trainable(sam.prompt_encoder, not model_cfg.freeze_prompt_encoder)
    _set_trainable(sam.mask_decoder, not model_cfg.freeze_mask_decoder)
    if not any(p.requires_grad for p in sam.parameters()):
        raise ValueError(f"strategy {strategy!r} with these freeze flags trains nothing: unfreeze a part")
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(sam.image_encoder)
    return FinetunedSam(sam=sam, strategy=strategy, model_type=cfg.model.type,
                        strategy_config=strategy_config, lora_model=lora_model)


# --- export --------------------------------------------------------------------------------------


def stock_sam(model: FinetunedSam) -> Sam:
    """A stock `Sam` copy of the fine-tuned model (LoRA merged; adapters dropped, see module doc)."""
    if model.strategy == "lora":
        return merged_sam(model.lora_model)
    stock = copy.deepcopy(model.sam)
    remove_adapters(stock.image_encoder)
    return stock


def stock_sam_state_dict(model: FinetunedSam) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in stock_sam(model).state_dict().items()}


def strategy_weights(model: FinetunedSam) -> dict[str, Any]:
    """The small strategy-only file: adapter or LoRA weights with their config."""
    if model.strategy == "adapter":
        state = {k: v.detach().cpu() for k, v in model.sam.image_encoder.state_dict().items()
                 if is_adapter_parameter(k)}
    elif model.strategy == "lora":
        state = {k: v.detach().cpu() for k, v in lora_state_dict(model.sam).items()}
    else:
        raise ValueError("the full strategy has no strategy-only weights")
    return {"strategy": model.strategy, "model_type": model.model_type,
            "strategy_config": model.strategy_config, "state_dict": state}


def load_finetuned(model_type: str, stock_checkpoint: str, image_size: int,
                   strategy_payload: dict[str, Any] | None = None) -> Sam:
    """Rebuild the fine-tuned model from the stock checkpoint plus (adapter / LoRA) strategy weights.

    LoRA is already merged into the stock checkpoint, so only adapters need the strategy file. The
    preprocessing.json beside the stock checkpoint sets the model's pixel_mean / pixel_std, so
    `SamPredictor(sam).set_image(map_intensity(image, intensity))` matches training.
    """
    sam = build_sam(model_type, stock_checkpoint, image_size=image_size)
    beside = Path(stock_checkpoint).parent / PREPROCESSING_FILE
    if beside.is_file():
        set_sam_normalization(sam, Preprocessing.load(beside).normalization)
    if strategy_payload is None or strategy_payload["strategy"] != "adapter":
        return sam
    add_adapters(sam.image_encoder, AdapterConfig(**strategy_payload["strategy_config"]))
    missing, unexpected = sam.image_encoder.load_state_dict(strategy_payload["state_dict"], strict=False)
    missing = [k for k in missing if is_adapter_parameter(k)]
    if missing or unexpected:
        raise ValueError(f"adapter weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return sam


def describe_trainable(model: FinetunedSam) -> dict[str, int]:
    sam = model.sam
    trainable, total = count_parameters(sam)
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_image_encoder": count_parameters(sam.image_encoder)[0],
        "trainable_prompt_encoder": count_parameters(sam.prompt_encoder)[0],
        "trainable_mask_decoder": count_parameters(sam.mask_decoder)[0],
        "lora_modules": len(lora_module_names(sam)),
    }


def build_finetuned_sam(cfg: FinetuneConfig) -> FinetunedSam:
    sam = build_sam(cfg.model.type, cfg.model.checkpoint, image_size=cfg.data.image_size)
    return apply_strategy(sam, cfg)


def unreachable_parameter_prefixes(cfg: FinetuneConfig) -> list[str]:
    """Parameter-name prefixes no prompt of this config ever gives a gradient (we never prompt with masks)."""
    d = cfg.data
    prefixes = ["prompt_encoder.mask_downscaling."]
    if d.prompt_mode == "box":
        prefixes += ["prompt_encoder.point_embeddings.0.", "prompt_encoder.point_embeddings.1.",
                     "prompt_encoder.not_a_point_embed."]
    else:
        if d.prompt_mode == "point":
            prefixes += ["prompt_encoder.point_embeddings.2.", "prompt_encoder.point_embeddings.3."]
        if d.num_negative_points == 0:
            prefixes.append("prompt_encoder.point_embeddings.0.")
            if d.prompt_mode == "both":  # with a box there is no "not a point" padding
                prefixes.append("prompt_encoder.not_a_point_embed.")
    if cfg.loss.iou_loss.weight == 0:
        prefixes.append("mask_decoder.iou_prediction_head.")
    return prefixes


def freeze_unreachable_parameters(sam: Sam, cfg: FinetuneConfig) -> list[str]:
    """Freeze the trainable weights no prompt of `cfg` reaches; returns their names.

    Without DDP's find_unused_parameters, such weights stop the run at its second step. They never get
    a gradient, so freezing them changes no update (AdamW skips gradient-less weights). With points and
    negatives next to a box, "not a point" padding appears only for objects that fill the image: that
    weight trains on some steps only, which no setting but find_unused_parameters can serve.
    """
    from projects.sam_finetune.config import ConfigError

    d = cfg.data
    if (d.prompt_mode == "both" and d.num_negative_points > 0 and not cfg.model.freeze_prompt_encoder):
        raise ConfigError("device.find_unused_parameters: must be true under DDP with a trainable prompt encoder "
                          "and prompt_mode both with negative points (the 'not a point' weight trains on some "
                          "steps only)")
    prefixes = tuple(unreachable_parameter_prefixes(cfg))
    frozen = []
    for name, parameter in sam.named_parameters():
        if parameter.requires_grad and name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
