"""The shared bench's models and its clone-per-step comparison do what the rows say they do."""

import copy

import torch
import torch.nn.functional as F

from shared.bench import Attention, CloneEachStepSAM, ViTLike, interleaved_times, step_time_ratios
from shared.memory import saved_activation_bytes
from shared.sam import SAM, OptimizationStep


def test_sdpa_attention_equals_explicit_softmax_attention():
    attention = Attention(dim=16, heads=2)
    x = torch.randn(3, 5, 16)
    q, k, v = attention.qkv(x).view(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
    weights = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)
    explicit = attention.proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(attention(x), explicit, atol=1e-6, rtol=1e-5)


def test_vit_gradient_checkpointing_same_outputs_and_gradients_less_saved():
    plain = ViTLike(dim=16, depth=3, heads=2, tokens=8, patch_dim=12)
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing = True
    x, y = torch.randn(4, 8, 12), torch.randint(0, 10, (4,))
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        saved[name], loss = saved_activation_bytes(lambda m=model: F.cross_entropy(m(x), y))
        loss.backward()
    torch.testing.assert_close(checkpointed(x), plain(x))
    for p, q in zip(checkpointed.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5)
    assert saved["checkpointed"] < saved["plain"] / 2


def test_clone_per_step_reference_makes_the_same_update_as_sam():
    torch.manual_seed(0)
    ours = ViTLike(dim=16, depth=1, heads=2, tokens=8, patch_dim=12)
    theirs = copy.deepcopy(ours)
    x, y = torch.randn(4, 8, 12), torch.randint(0, 10, (4,))
    # SGD: AdamW would turn the k-projection bias's zero-in-theory, rounding-noise gradient into +-lr steps
    stepper = OptimizationStep(ours, SAM(ours.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9))
    reference = CloneEachStepSAM(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9), rho=0.05)
    for _ in range(2):
        stepper.step(lambda b: F.cross_entropy(ours(b[0]), b[1]), [(x, y)])
        reference.step(lambda: F.cross_entropy(theirs(x), y))
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_interleaved_rounds_rotate_the_order():
    calls = []
    interleaved_times({name: (lambda n=name: calls.append(n)) for name in "abc"}, rounds=3, repeats=1)
    assert calls[6:] == list("abc") + list("bca") + list("cab")  # after two warm-up calls each


def test_step_time_ratios_report_every_variant():
    ratios = step_time_ratios("mlp", 4, rounds=1, repeats=1)
    assert set(ratios) == {"sam", "asam", "reference", "floor_ms", "rounds"}
    assert all(value > 0 for value in ratios.values())
