"""The tool's `make gpu-check` cases: they build at tiny size and one loss + backward works on CPU for
each, with and without gradient checkpointing; the full-size config is the published architecture."""

import pytest
import torch

from projects.siglip_sam_dementia.full_size import BASE_NAFLEX_VOCAB, siglip2_base_naflex_config
from projects.siglip_sam_dementia.gpu_check import gpu_check_cases, prediction_throughput


def test_full_size_config_is_the_base_naflex_architecture():
    config = siglip2_base_naflex_config()
    for tower in (config.text_config, config.vision_config):
        assert (tower.hidden_size, tower.intermediate_size, tower.num_hidden_layers, tower.num_attention_heads) == (
            768, 3072, 12, 12)
    assert (config.vision_config.patch_size, config.vision_config.num_patches) == (16, 256)
    assert (config.text_config.vocab_size, config.text_config.max_position_embeddings) == (BASE_NAFLEX_VOCAB, 64)
    (case,) = gpu_check_cases("full")  # described, not built (that is the GPU machine's job)
    assert case.tool == "siglip_sam_dementia" and "batch 32" in case.name and "lion" in case.optimizers


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_cases_build_and_backpropagate_on_cpu(checkpointing):
    for case in gpu_check_cases("tiny"):
        torch.manual_seed(0)
        model = case.build_model(checkpointing).train()
        batch = case.make_batch(torch.device("cpu"))
        value = case.loss(model, batch)
        value.backward()
        assert torch.isfinite(value)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        layers = list(model.vision_tower.encoder.layers) + list(model.text_tower.encoder.layers)
        assert all(layer.gradient_checkpointing is checkpointing for layer in layers)


def test_extra_reports_prediction_throughput():
    rates = prediction_throughput("tiny", torch.device("cpu"), repeats=1)
    assert set(rates) == {"predict_recordings_per_s_fp32", "predict_recordings_per_s_bf16"}
    assert all(rate > 0 for rate in rates.values())
