"""gpu_check_cases: the tiny cases build and take one loss + backward on CPU, with and without checkpointing;
the full cases describe DFormerv2-S at 480×640 (built on the meta device: no memory)."""

from __future__ import annotations

import pytest
import torch

from projects.dformer_sam_attention.gpu_check import gpu_check_cases


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_cases_step_on_cpu(checkpointing):
    cases = gpu_check_cases("tiny")
    assert [case.tool for case in cases] == ["dformer_sam_attention"] * 2
    losses = []
    for case in cases:
        model = case.build_model(checkpointing).train()
        assert all(layer.gradient_checkpointing == checkpointing for layer in model.backbone.layers)
        loss = case.loss(model, case.make_batch(torch.device("cpu")))
        loss.backward()
        assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        losses.append(float(loss.detach()))
    assert losses[0] != losses[1]  # with and without the alignment module


def test_full_cases_are_the_real_architecture():
    cases = gpu_check_cases("full")
    assert "DFormerv2_S 480x640 batch 4" in cases[0].name
    with torch.device("meta"):
        model = cases[0].build_model(True)
    assert model.backbone.embed_dims == [64, 128, 256, 512] and model.uses_text
    assert sum(p.numel() for p in model.parameters()) > 20e6  # DFormerv2-S + head, not a toy
    with pytest.raises(ValueError, match="size must be one of"):
        gpu_check_cases("huge")
