import torch

from shared.amp import AmpPolicy


def test_cpu_autocasts_bf16_without_scaler():
    policy = AmpPolicy.create("cpu", enabled=True)
    assert policy.dtype == torch.bfloat16 and not policy.needs_scaler and policy.make_scaler() is None
    with policy.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16


def test_fp16_needs_scaler_and_disabled_is_fp32():
    fp16 = AmpPolicy.create("cpu", enabled=True, dtype="fp16")
    assert fp16.needs_scaler and isinstance(fp16.make_scaler(), torch.amp.GradScaler)
    off = AmpPolicy.create("cpu", enabled=False, dtype="fp16")
    assert not off.enabled and off.make_scaler() is None
    with off.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


def test_cuda_choice_follows_bf16_support(monkeypatch):
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        policy = AmpPolicy.create("cuda", enabled=True)
        assert policy.dtype == expected and policy.needs_scaler == (expected == torch.float16)
