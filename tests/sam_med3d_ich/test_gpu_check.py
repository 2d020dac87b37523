"""`make gpu-check` case of this tool, built at tiny size: a loss and backward on CPU with and without
gradient checkpointing, equal outputs and gradients either way, and the tool's extra measurement."""

import pytest
import torch

from projects.sam_med3d_ich.gpu_check import gpu_check_cases


def test_tiny_cases_build_and_train_equally_with_and_without_checkpointing():
    cases = gpu_check_cases("tiny")
    assert [case.tool for case in cases] == ["sam_med3d_ich"] and "sam" in cases[0].optimizers
    for case in cases:
        batch = case.make_batch(torch.device("cpu"))
        results = []
        for checkpointing in (False, True):
            model = case.build_model(checkpointing)
            assert model.model.image_encoder.gradient_checkpointing is checkpointing
            loss = case.loss(model, batch)
            loss.backward()
            assert torch.isfinite(loss)
            results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
        torch.testing.assert_close(loss_ckpt, loss_plain)
        assert grads_plain.keys() == grads_ckpt.keys() and any("image_encoder.neck" in n for n in grads_plain)
        for name in grads_plain:
            torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)
        extra = case.extra(torch.device("cpu"))
        assert len(extra) == 2 and all(value > 0 for value in extra.values())


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="size must be one of full, tiny"):
        gpu_check_cases("huge")
