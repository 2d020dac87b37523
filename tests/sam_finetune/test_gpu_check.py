"""The GPU-check cases build at tiny size and take one loss + backward on the CPU, with and without
gradient checkpointing; the cache extra measures both epochs."""

from __future__ import annotations

import pytest
import torch

from projects.sam_finetune.gpu_check import cache_epoch_times, gpu_check_cases
from projects.sam_finetune.modeling.checkpointing import uses_gradient_checkpointing


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_cases_take_a_step_on_cpu(checkpointing):
    cases = gpu_check_cases("tiny")
    assert [case.tool for case in cases] == ["sam_finetune"] * 3 and cases[0].extra is not None
    for case in cases:
        model = case.build_model(checkpointing).train()
        assert uses_gradient_checkpointing(model.sam.image_encoder) == checkpointing
        loss = case.loss(model, case.make_batch(torch.device("cpu")))
        loss.backward()
        grads = [p.grad for p in model.sam.image_encoder.parameters() if p.requires_grad]
        assert torch.isfinite(loss) and grads and all(g is not None for g in grads), case.name


def test_cache_extra_reports_both_epochs():
    times = cache_epoch_times("tiny", torch.device("cpu"))
    assert times["uncached_epoch_s"] > 0 and times["cached_epoch_s"] > 0
    assert times["cache_speedup"] == pytest.approx(times["uncached_epoch_s"] / times["cached_epoch_s"])
    with pytest.raises(ValueError, match="size must be one of"):
        gpu_check_cases("huge")
