"""LoRA on SAM's image-encoder attention through PEFT.

PEFT matches a list of `target_modules` by name suffix, so ["qkv", "proj"] would also wrap the
patch-embedding convolution `image_encoder.patch_embed.proj`. We pass PEFT one regular expression
that matches the attention linears of the encoder blocks exactly.
"""

from __future__ import annotations

import copy

from peft import LoraConfig, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer, LoraModel
from segment_anything.modeling import Sam
from torch import nn

from projects.sam_finetune.config import LoraConfigSection


def lora_target_regex(target_modules: list[str]) -> str:
    """The attention linears named in `target_modules` (a subset of qkv, proj), in every encoder block."""
    names = "|".join(sorted(set(target_modules)))
    return rf"image_encoder\.blocks\.\d+\.attn\.({names})"


def peft_lora_config(cfg: LoraConfigSection) -> LoraConfig:
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=lora_target_regex(cfg.target_modules), bias="none")


def add_lora(sam: Sam, cfg: LoraConfigSection) -> LoraModel:
    """Wrap the targeted linears of `sam` with LoRA layers in place; every other weight is frozen.

    Returns PEFT's LoraModel around `sam` (kept outside the training module tree) for merging.
    """
    return LoraModel(sam, peft_lora_config(cfg), "default")


def lora_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def merged_sam(lora_model: LoraModel) -> Sam:
    """A stock `Sam` with W + (alpha / r) * B @ A folded into each targeted linear (a copy)."""
    return copy.deepcopy(lora_model).merge_and_unload()


def lora_state_dict(sam: Sam) -> dict:
    """Only the LoRA matrices, in PEFT's naming."""
    return get_peft_model_state_dict(sam)
