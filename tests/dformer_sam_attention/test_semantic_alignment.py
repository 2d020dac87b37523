"""The Semantic Alignment Module: attention maths, temperatures, and that every flag matters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from projects.dformer_sam_attention.models.blocks.semantic_alignment import (
    AlignmentAttention,
    AttentionTemperature,
    SemanticAlignmentModule,
    clamp_temperatures_,
)

DIM, TEXT_DIM, HEADS, CLASSES = 32, 24, 4, 6


def make(side="encoder", **attention) -> SemanticAlignmentModule:
    torch.manual_seed(0)
    base = AlignmentAttention.encoder_default() if side == "encoder" else AlignmentAttention.decoder_default()
    return SemanticAlignmentModule(DIM, TEXT_DIM, HEADS, AlignmentAttention(**{**base.__dict__, **attention}), side)


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 5, 7, DIM, generator=generator), torch.randn(CLASSES, TEXT_DIM, generator=generator)


def test_encoder_defaults_equal_scaled_dot_product_attention(inputs):
    x, text = inputs
    module = make("encoder")
    tokens = x.reshape(2, 35, DIM)
    q = module.q_proj(tokens).view(2, 35, HEADS, -1).transpose(1, 2)
    k = module.k_proj(text).view(1, CLASSES, HEADS, -1).transpose(1, 2).expand(2, -1, -1, -1)
    v = module.v_proj(text).view(1, CLASSES, HEADS, -1).transpose(1, 2).expand(2, -1, -1, -1)
    reference = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 35, DIM)
    torch.testing.assert_close(module.attend(tokens, text), module.out_proj(reference), atol=1e-6, rtol=1e-5)
    expected = tokens + module.gamma * module.out_proj(reference)
    torch.testing.assert_close(module.forward_ssa(x, text), expected.view_as(x), atol=1e-6, rtol=1e-5)


def test_cosine_attention_is_not_divided_by_sqrt_dk(inputs):
    """Documented choice: cosine logits are s·cos(q, k) — the largest possible logit is s itself."""
    x, text = inputs
    module = make("decoder", use_cosine=True, learnable_temp=False, logit_init=14.285714)
    assert float(module.logit_scale()) == pytest.approx(14.285714, rel=1e-6)
    plain = make("decoder", use_cosine=False, learnable_temp=False, logit_init=14.285714)
    assert float(plain.logit_scale()) == pytest.approx(14.285714 / math.sqrt(DIM // HEADS), rel=1e-6)
    # the logits really are s·cos: recompute them from normalised projections
    tokens = module.norm1(x.reshape(2, 35, DIM))
    weights, _ = module.attention_weights(tokens, text)
    q = F.normalize(module.q_proj(tokens).view(2, 35, HEADS, -1).transpose(1, 2), dim=-1)
    k = F.normalize(module.k_proj(text).view(1, CLASSES, HEADS, -1).transpose(1, 2), dim=-1)
    torch.testing.assert_close(weights, (14.285714 * q @ k.transpose(-1, -2)).softmax(-1), atol=1e-6, rtol=1e-5)
    # with √d_k the softmax would be far flatter (entropy closer to log T)
    flat = (14.285714 / math.sqrt(DIM // HEADS) * q @ k.transpose(-1, -2)).softmax(-1)
    entropy = lambda p: float(-(p * p.log()).sum(-1).mean().detach())  # noqa: E731
    assert entropy(weights) < entropy(flat) - 0.1


@pytest.mark.parametrize("side", ["encoder", "decoder"])
@pytest.mark.parametrize("change", [{"use_cosine": "flip"}, {"learnable_temp": "flip"}, {"logit_init": 3.0}])
def test_every_flag_changes_the_computation(inputs, side, change):
    x, text = inputs
    default = AlignmentAttention.encoder_default() if side == "encoder" else AlignmentAttention.decoder_default()
    key, value = next(iter(change.items()))
    value = (not getattr(default, key)) if value == "flip" else value
    module_a, module_b = make(side), make(side, **{key: value})
    run = (lambda m: m.forward_ssa(x, text)) if side == "encoder" else (lambda m: m(x, text))
    if key == "learnable_temp":
        # same values at init; learnable differs in what training can do: it has a gradient
        assert module_a.temperature.learnable != module_b.temperature.learnable
        learnable = module_a if module_a.temperature.learnable else module_b
        run(learnable).square().sum().backward()
        assert learnable.temperature.log_scale.grad is not None
        assert float(learnable.temperature.log_scale.grad.abs()) > 0
        fixed = module_b if learnable is module_a else module_a
        assert "temperature.log_scale" not in dict(fixed.named_parameters())
        assert "temperature.log_scale" in dict(fixed.named_buffers())
    else:
        assert not torch.allclose(run(module_a), run(module_b), atol=1e-5)


def train_steps(module: SemanticAlignmentModule, inputs, steps: int = 5) -> None:
    x, text = inputs
    target = torch.randn_like(x)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        F.mse_loss(module(x, text), target).backward()
        optimizer.step()
        clamp_temperatures_(module)


def test_learnable_temperature_changes_after_training_steps(inputs):
    """At the decoder default init (14.29 > e²) the temperature must still learn (the original froze it)."""
    module = make("decoder")
    before = float(module.temperature().detach())
    train_steps(module, inputs)
    assert abs(float(module.temperature().detach()) - before) > 1e-3


def test_fixed_temperature_does_not_change(inputs):
    module = make("decoder", learnable_temp=False)
    before = module.temperature.log_scale.clone()
    train_steps(module, inputs)
    assert torch.equal(module.temperature.log_scale, before)


def test_temperature_is_kept_in_range_with_gradient_alive():
    temperature = AttentionTemperature(50.0, learnable=True)
    with torch.no_grad():
        temperature.log_scale.fill_(math.log(1000.0))  # pushed outside by an update
    value = temperature()
    assert float(value.detach()) == pytest.approx(100.0)  # the forward pass uses the clamped value
    value.backward()
    assert float(temperature.log_scale.grad) == pytest.approx(100.0)  # straight-through: not zero
    clamp_temperatures_(temperature)
    assert float(temperature.log_scale) == pytest.approx(math.log(100.0))
    with pytest.raises(ValueError, match="temperature init"):
        AttentionTemperature(500.0, learnable=False)


def test_each_side_has_only_its_own_parameters(inputs):
    x, text = inputs
    encoder_side, decoder_side = make("encoder"), make("decoder")
    assert not hasattr(encoder_side, "ffn") and hasattr(encoder_side, "gamma")
    assert hasattr(decoder_side, "ffn") and not hasattr(decoder_side, "gamma")
    with pytest.raises(RuntimeError, match="call forward_ssa"):
        encoder_side(x, text)
    with pytest.raises(RuntimeError, match="call forward"):
        decoder_side.forward_ssa(x, text)
    # every parameter of each side receives a gradient (nothing dangling under DDP)
    encoder_side.forward_ssa(x, text).sum().backward()
    decoder_side(x, text).sum().backward()
    for module in (encoder_side, decoder_side):
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("cosine, learnable", [(True, True), (False, False), (False, True)])
def test_fused_attention_equals_the_explicit_softmax_with_the_temperature_gradient(cosine, learnable):
    torch.manual_seed(0)
    module = SemanticAlignmentModule(32, 16, 4, AlignmentAttention(cosine, learnable, 5.0), side="encoder")
    tokens, text = torch.randn(2, 35, 32, requires_grad=True), torch.randn(7, 16)
    fused = module.attend(tokens, text)
    weights, v = module.attention_weights(tokens, text)
    explicit = module.out_proj((weights @ v).transpose(1, 2).reshape(2, 35, 32))
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), [tokens, *module.parameters()], allow_unused=True)
             for out in (fused, explicit)]
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)  # float32, summed squares
    if learnable:
        assert grads[0][1 + [n for n, _ in module.named_parameters()].index("temperature.log_scale")].abs() > 0
