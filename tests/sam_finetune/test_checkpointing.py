"""Gradient checkpointing of the image encoder: same outputs and gradients for full, adapter and LoRA,
block activations recomputed in backward, unchanged state-dict keys, and a flag that cannot apply refused."""

from __future__ import annotations

import pytest
import torch

from projects.sam_finetune.config import ConfigError, config_from_dict
from projects.sam_finetune.modeling.checkpointing import uses_gradient_checkpointing
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam
from projects.sam_finetune.modeling.strategies import build_finetuned_sam


def _model(strategy: str, checkpointing: bool) -> PromptedSam:
    cfg = config_from_dict({
        "model": {"type": "tiny", "freeze_image_encoder": False, "gradient_checkpointing": checkpointing},
        "data": {"image_size": 64},
        "finetuning": {"strategy": strategy, "adapter": {"bottleneck_dim": 8}},
    })
    torch.manual_seed(0)
    model = PromptedSam(build_finetuned_sam(cfg).sam).train()
    if strategy != "full":  # LoRA's B and adapters' up-projections start at zero: make them matter
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.requires_grad and ("lora_B" in name or "up" in name):
                    parameter.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("strategy", ["full", "adapter", "lora"])
def test_checkpointed_encoder_gives_the_same_outputs_and_gradients(strategy):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    prompts = [ImagePrompts(boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]])),
               ImagePrompts(boxes=torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 63.0, 63.0]]))]
    results = {}
    for checkpointing in (False, True):
        model = _model(strategy, checkpointing)
        assert uses_gradient_checkpointing(model.sam.image_encoder) == checkpointing
        block_calls: list[int] = []
        model.sam.image_encoder.blocks[0].attn.register_forward_hook(lambda *_, calls=block_calls: calls.append(1))
        outputs = model(prompts, images=images)
        loss = sum(logits.square().mean() + iou.sum() for logits, iou in outputs)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        results[checkpointing] = (outputs, grads, len(block_calls), set(model.state_dict()))
    (plain_out, plain_grads, plain_calls, plain_keys), (ckpt_out, ckpt_grads, ckpt_calls, ckpt_keys) = \
        results[False], results[True]
    assert plain_calls == 1 and ckpt_calls == 2  # recomputed in backward
    assert plain_keys == ckpt_keys and plain_grads.keys() == ckpt_grads.keys()
    assert any(name.startswith("sam.image_encoder.") for name in ckpt_grads)
    for (a_logits, a_iou), (b_logits, b_iou) in zip(plain_out, ckpt_out):
        torch.testing.assert_close(b_logits, a_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b_iou, a_iou, rtol=1e-5, atol=1e-6)
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointing_a_frozen_encoder_is_refused():
    with pytest.raises(ConfigError, match="model.gradient_checkpointing: applies to a training image encoder"):
        config_from_dict({"model": {"type": "tiny", "gradient_checkpointing": True}, "data": {"image_size": 64}})
