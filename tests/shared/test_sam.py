"""SAM / ASAM follow the paper's update rule with SGD, AdamW and Lion bases, and the step helper
handles AMP, accumulation, BatchNorm, one-pass gradients and schedulers."""

import copy
import warnings

import pytest
import torch
from lion_pytorch import Lion
from torch import nn

from shared.amp import AmpPolicy
from shared.optim import build_optimizer, build_scheduler
from shared.sam import SAM, OptimizationStep

BASES = {
    "sgd": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "lion": (Lion, {"lr": 0.003, "weight_decay": 0.1}),
}


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))


def make_batch(n: int = 16, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randn(n, 1, generator=g)


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def reference_update(model, base_cls, base_kwargs, rho, adaptive, batch, steps=2):
    """The paper's rule written out by hand with autograd; one base optimizer kept across steps."""
    params = list(model.parameters())
    base = base_cls(params, **base_kwargs)
    for _ in range(steps):
        grads = torch.autograd.grad(mse(model, batch), params)
        with torch.no_grad():
            if adaptive:
                norm = torch.sqrt(sum(((p.abs() * g) ** 2).sum() for p, g in zip(params, grads)))
                e = [rho * p * p * g / (norm + 1e-12) for p, g in zip(params, grads)]
            else:
                norm = torch.sqrt(sum((g**2).sum() for g in grads))
                e = [rho * g / (norm + 1e-12) for g in grads]
            for p, e_p in zip(params, e):
                p.add_(e_p)
        grads_at_perturbed = torch.autograd.grad(mse(model, batch), params)
        with torch.no_grad():
            for p, e_p, g in zip(params, e, grads_at_perturbed):
                p.sub_(e_p)
                p.grad = g.clone()
        base.step()
    return model


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("adaptive,rho", [(False, 0.05), (True, 0.5)])
def test_update_equals_paper_rule(base, adaptive, rho):
    base_cls, kwargs = BASES[base]
    batch = make_batch()
    expected = reference_update(make_model(), base_cls, kwargs, rho, adaptive, batch)

    via_stepper = make_model()
    optimizer = SAM(via_stepper.parameters(), base_cls, rho=rho, adaptive=adaptive, **kwargs)
    stepper = OptimizationStep(via_stepper, optimizer)
    via_closure = make_model()
    closure_opt = SAM(via_closure.parameters(), base_cls, rho=rho, adaptive=adaptive, **kwargs)
    for _ in range(2):
        stepper.step(lambda b: mse(via_stepper, b), [batch])

        def closure():
            loss = mse(via_closure, batch)
            loss.backward()
            return loss

        closure_opt.zero_grad()
        closure()
        closure_opt.step(closure)
    for got in (via_stepper, via_closure):
        for p, q in zip(got.parameters(), expected.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_rho_and_adaptive_per_group():
    model = make_model()
    first, second = model[0], model[2]
    optimizer = SAM([{"params": first.parameters(), "rho": 0.0},
                     {"params": second.parameters(), "rho": 0.2, "adaptive": True}],
                    torch.optim.SGD, rho=0.05, lr=0.1)
    before = copy.deepcopy(model)
    mse(model, make_batch()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm_sq = sum((g**2).sum() for g in grads[:2]) + sum(((p.abs() * g) ** 2).sum()
                                                          for p, g in zip(second.parameters(), grads[2:]))
    optimizer.first_step()
    for p, q in zip(first.parameters(), before[0].parameters()):
        torch.testing.assert_close(p, q)  # rho 0: not moved
    for p, q, g in zip(second.parameters(), before[2].parameters(), grads[2:]):
        torch.testing.assert_close(p, q + 0.2 * q * q * g / norm_sq.sqrt())
    optimizer.second_step()


def make_bn_free_classifier() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("name", ["sam", "adamw"])
def test_gradient_accumulation_equals_concatenated_batch(name):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)

    def run(micro_batches):
        model = make_bn_free_classifier()
        optimizer = build_optimizer(name, model, 1e-2, 0.01)
        stepper = OptimizationStep(model, optimizer)
        for _ in range(3):
            stepper.step(lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), micro_batches)
        return model

    whole = run([(x, y)])
    accumulated = run(list(zip(x.chunk(4), y.chunk(4))))
    for p, q in zip(whole.parameters(), accumulated.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_fp16_grad_scaler_matches_fp32_and_skips_inf():
    batch = make_batch()
    fp32_model, fp16_model = make_model(), make_model()
    fp32 = OptimizationStep(fp32_model, SAM(fp32_model.parameters(), torch.optim.SGD, lr=0.1))
    fp16 = OptimizationStep(fp16_model, SAM(fp16_model.parameters(), torch.optim.SGD, lr=0.1),
                            amp=AmpPolicy("cpu", torch.float16))
    assert fp16.scaler is not None and fp32.scaler is None
    for _ in range(2):  # a second step would raise "unscale_() has already been called" if unscaled twice
        fp32.step(lambda b: mse(fp32_model, b), [batch])
        result = fp16.step(lambda b: mse(fp16_model, b), [batch])
        assert not result.skipped
    for p, q in zip(fp16_model.parameters(), fp32_model.parameters()):
        torch.testing.assert_close(p, q, atol=2e-3, rtol=2e-2)

    for inf_in_pass in (1, 2):
        before = copy.deepcopy(fp16_model.state_dict())
        scale = fp16.scaler.get_scale()
        calls = {"n": 0}

        def loss_with_inf(b, inf_in_pass=inf_in_pass, calls=calls):
            calls["n"] += 1
            loss = mse(fp16_model, b)
            return loss * float("inf") if calls["n"] == inf_in_pass else loss

        result = fp16.step(loss_with_inf, [batch])
        assert result.skipped
        assert fp16.scaler.get_scale() == scale * 0.5
        assert not fp16.optimizer.is_perturbed
        for key, value in fp16_model.state_dict().items():
            torch.testing.assert_close(value, before[key], atol=0, rtol=0)


class TwoBranch(nn.Module):
    """`branch` is used only in calls with `use_branch=True`: a gradient in one pass only."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(5, 1)
        self.branch = nn.Linear(5, 1)
        self.calls = 0

    def forward(self, x, use_branch):
        out = self.trunk(x)
        return out + self.branch(x) if use_branch else out


@pytest.mark.parametrize("branch_in_pass", [1, 2])
def test_parameter_with_gradient_in_one_pass_only(branch_in_pass):
    model = TwoBranch()
    branch_before = model.branch.weight.detach().clone()
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        x, y = batch
        return nn.functional.mse_loss(model(x, use_branch=calls["n"] == branch_in_pass), y)

    OptimizationStep(model, optimizer).step(loss_fn, [make_batch()])
    assert not optimizer.is_perturbed
    if branch_in_pass == 1:  # perturbed then restored, never updated (no second-pass gradient)
        torch.testing.assert_close(model.branch.weight, branch_before, atol=0, rtol=0)
    else:  # updated by its second-pass gradient
        assert not torch.equal(model.branch.weight, branch_before)


def test_batchnorm_running_stats_follow_first_pass_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    reference = copy.deepcopy(model)
    batch = make_batch()
    reference(batch[0])  # one forward at the unperturbed weights
    OptimizationStep(model, build_optimizer("sam", model, 0.1, 0.0, sam_rho=0.5)).step(
        lambda b: mse(model, b), [batch])
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
    torch.testing.assert_close(model[1].running_var, reference[1].running_var)
    assert int(model[1].num_batches_tracked) == 1


def test_scheduler_on_sam_drives_base_optimizer_without_warning():
    model = make_model()
    optimizer = build_optimizer("sam", model, 0.1, 0.0)
    schedule = build_scheduler(optimizer, "linear", total_steps=4, warmup_steps=0)
    stepper = OptimizationStep(model, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for expected_lr in (0.075, 0.05):
            stepper.step(lambda b: mse(model, b), [make_batch()])
            schedule.step_iteration()
            assert all(g["lr"] == pytest.approx(expected_lr) for g in optimizer.base_optimizer.param_groups)


def test_state_dict_round_trip_continues_identically():
    batch = make_batch()
    model = make_model()
    optimizer = SAM(model.parameters(), torch.optim.AdamW, rho=0.1, lr=0.01)
    stepper = OptimizationStep(model, optimizer)
    stepper.step(lambda b: mse(model, b), [batch])
    clone = copy.deepcopy(model)
    clone_opt = SAM(clone.parameters(), torch.optim.AdamW, rho=0.7, lr=0.5)  # overwritten by load
    clone_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as if read from disk
    assert clone_opt.param_groups is clone_opt.base_optimizer.param_groups
    assert clone_opt.param_groups[0]["rho"] == 0.1
    stepper.step(lambda b: mse(model, b), [batch])
    OptimizationStep(clone, clone_opt).step(lambda b: mse(clone, b), [batch])
    for p, q in zip(model.parameters(), clone.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_saved_weights_buffer_is_one_copy_and_reused():
    model = make_model()
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    stepper = OptimizationStep(model, optimizer)
    stepper.step(lambda b: mse(model, b), [make_batch()])
    buffers = [optimizer.state[p]["saved_weight"] for p in model.parameters()]
    stepper.step(lambda b: mse(model, b), [make_batch()])
    assert all(optimizer.state[p]["saved_weight"] is b for p, b in zip(model.parameters(), buffers))
    assert sum(b.numel() for b in buffers) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["sam", "adamw"])
def test_total_gradient_norm_only_when_clipping_or_tracking(name, monkeypatch):
    batch = make_batch()

    def one_step(**kwargs):
        model = make_model()
        stepper = OptimizationStep(model, build_optimizer(name, model, 0.1, 0.0), **kwargs)
        return stepper.step(lambda b: mse(model, b), [batch])

    with monkeypatch.context() as patch:  # nothing clips or logs it: no pass over the gradients for it
        def no_norm_pass(*args, **kwargs):
            raise AssertionError("a total-norm pass nobody uses")
        patch.setattr(torch.nn.utils, "get_total_norm", no_norm_pass)
        patch.setattr(torch.nn.utils, "clip_grad_norm_", no_norm_pass)
        assert one_step().grad_norm is None
    tracked = one_step(track_grad_norm=True).grad_norm
    clipped = one_step(max_grad_norm=1e-3).grad_norm
    assert tracked is not None and tracked > 1e-3 and clipped == pytest.approx(tracked)


@pytest.mark.parametrize("name", ["sam", "adamw"])
def test_non_finite_loss_skips_the_step_without_scaler(name):
    model = make_model()
    stepper = OptimizationStep(model, build_optimizer(name, model, 0.1, 0.0))
    before = copy.deepcopy(model.state_dict())
    calls = {"n": 0}

    def loss_nan_in_last_pass(b):
        calls["n"] += 1
        loss = mse(model, b)
        return loss * float("nan") if calls["n"] == (2 if name == "sam" else 1) else loss

    assert stepper.step(loss_nan_in_last_pass, [make_batch()]).skipped
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_storage_swap_and_multi_tensor_copy_make_the_same_step(adaptive, monkeypatch):
    """CPU perturbs in one pass into the spare buffer and swaps storages; a device with multi-tensor
    kernels (CUDA; the capability mocked here) copies, adds and copies back. Same weights either way."""
    import shared.sam as sam_module

    def train(foreach_devices):
        with monkeypatch.context() as patch:
            patch.setattr(sam_module, "_get_foreach_kernels_supported_devices", lambda: foreach_devices)
            model = make_model()
            optimizer = SAM(model.parameters(), torch.optim.AdamW, rho=0.5 if adaptive else 0.05,
                            adaptive=adaptive, lr=0.01)
            stepper = OptimizationStep(model, optimizer)
            before = {p: p.detach().clone() for p in model.parameters()}
            mse(model, make_batch()).backward()
            swapped = SAM._swap_storage(list(model.parameters()))
            optimizer.perturb_weights()
            for p in model.parameters():  # during the perturbation the saved buffer holds the old weights
                torch.testing.assert_close(optimizer.state[p]["saved_weight"], before[p], atol=0, rtol=0)
                assert not torch.equal(p, before[p])
            optimizer.restore_weights()
            for p in model.parameters():
                torch.testing.assert_close(p, before[p], atol=0, rtol=0)
            for _ in range(2):
                stepper.step(lambda b: mse(model, b), [make_batch()])
            return model, swapped

    (swapping, swapped), (copying, copied) = train(["cuda"]), train(["cuda", "cpu"])
    assert swapped and not copied
    for p, q in zip(swapping.parameters(), copying.parameters()):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)
