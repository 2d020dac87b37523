"""No-decay groups by module type, Lion's defaults, lr multipliers and the schedules' shapes."""

import math

import pytest
import torch
from lion_pytorch import Lion
from torch import nn

from shared.optim import build_optimizer, build_scheduler, param_groups, resolve_lr_and_weight_decay
from shared.sam import SAM, OptimizationStep


class OddlyNamedNorm(nn.Module):  # a norm class from outside torch.nn, e.g. LayerNorm2d
    def __init__(self, dim):
        super().__init__()
        self.scale_vector = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.scale_vector


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(10, 8)          # no decay
        self.q = nn.Linear(8, 8)                 # weight decays, bias not
        self.zz = nn.LayerNorm(8)                # names that contain no "norm" substring
        self.a1 = nn.GroupNorm(2, 8)
        self.b2 = nn.BatchNorm1d(8)
        self.c3 = OddlyNamedNorm(8)
        self.conv = nn.Conv1d(8, 8, 3, bias=False)
        self.attn = nn.MultiheadAttention(8, 2)  # in_proj_bias and out_proj.bias: no decay
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_no_decay_groups_by_module_type():
    net = Net()
    groups = param_groups(net, lr=1.0, weight_decay=0.5)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    not_decayed = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed == {id(net.q.weight), id(net.conv.weight), id(net.attn.in_proj_weight), id(net.attn.out_proj.weight)}
    assert not_decayed == {id(p) for p in (net.tok.weight, net.q.bias, net.zz.weight, net.zz.bias, net.a1.weight,
                                           net.a1.bias, net.b2.weight, net.b2.bias, net.c3.scale_vector,
                                           net.attn.in_proj_bias, net.attn.out_proj.bias)}
    assert id(net.frozen.weight) not in decayed | not_decayed


def test_lr_multipliers_by_submodule_prefix():
    net = Net()
    groups = param_groups(net, lr=1e-3, weight_decay=0.1, lr_multipliers={"q": 0.1, "conv": 2.0})
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(net.q.weight)] == pytest.approx(1e-4) and lr_of[id(net.q.bias)] == pytest.approx(1e-4)
    assert lr_of[id(net.conv.weight)] == pytest.approx(2e-3)
    assert lr_of[id(net.tok.weight)] == pytest.approx(1e-3)


def test_build_optimizer_kinds():
    net = Net()
    assert isinstance(build_optimizer("adamw", net, 1e-3, 0.1), torch.optim.AdamW)
    assert isinstance(build_optimizer("lion", net, 1e-3, 0.1), Lion)
    sam = build_optimizer("sam", net, 1e-3, 0.1, sam_base="sgd", sam_rho=0.2, sam_adaptive=True)
    assert isinstance(sam, SAM) and isinstance(sam.base_optimizer, torch.optim.SGD)
    assert all(g["rho"] == 0.2 and g["adaptive"] for g in sam.param_groups)
    assert sam.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="choose from adamw, lion, sam"):
        build_optimizer("rmsprop", net, 1e-3, 0.1)


def test_lion_defaults_follow_its_authors_unless_set():
    assert resolve_lr_and_weight_decay("adamw", "adamw", None, None, 3e-4, 0.01) == (3e-4, 0.01)
    lr, wd = resolve_lr_and_weight_decay("lion", "adamw", None, None, 3e-4, 0.01)
    assert 3 <= 3e-4 / lr <= 10 and 3 <= wd / 0.01 <= 10
    assert resolve_lr_and_weight_decay("sam", "lion", None, None, 3e-4, 0.01) == (lr, wd)
    assert resolve_lr_and_weight_decay("lion", "adamw", 1e-3, 0.2, 3e-4, 0.01) == (1e-3, 0.2)


def lrs(name, steps, **kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(opt, name, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step_iteration()
        schedule.step_epoch()
    return out


def test_schedule_shapes():
    cosine = lrs("cosine", 12, total_steps=12, warmup_steps=2, min_lr=0.1)
    assert cosine[:2] == pytest.approx([0.5, 1.0])
    assert cosine[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    linear = lrs("linear", 5, total_steps=4)
    assert linear == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    poly = lrs("poly", 3, total_steps=4, poly_power=0.9)
    assert poly[2] == pytest.approx(0.5**0.9)
    step = lrs("step", 5, step_size=2, gamma=0.1)
    assert step == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_plateau_reduces_after_patience_and_needs_metric():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(opt, "plateau", plateau_patience=1, plateau_factor=0.5, plateau_mode="max")
    for metric in (0.5, 0.6, 0.6, 0.6):
        schedule.step_iteration()  # no effect on an epoch schedule
        schedule.step_epoch(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="validation metric"):
        schedule.step_epoch()


def test_fast_update_path_follows_parameter_devices_and_kernels(monkeypatch):
    import shared.optim as optim

    net = Net()
    # torch's own capability lists on this CPU machine: fused kernels exist for cpu and cuda
    assert build_optimizer("adamw", net, 1e-3, 0.1).defaults["fused"] is True
    sam = build_optimizer("sam", net, 1e-3, 0.1, sam_base="sgd")
    assert sam.base_optimizer.defaults["fused"] is True
    assert not hasattr(build_optimizer("lion", net, 1e-3, 0.1), "fused")

    # parameters on a CUDA device (the device check mocked; torch's kernel lists are the real ones)
    monkeypatch.setattr(optim, "param_device_types", lambda params: {"cuda"})
    assert "cuda" in optim.fused_kernel_devices()
    assert build_optimizer("adamw", net, 1e-3, 0.1).defaults["fused"] is True
    # a build whose CUDA has foreach but no fused kernels (capability mocked): foreach
    monkeypatch.setattr(optim, "fused_kernel_devices", lambda: [])
    adamw = build_optimizer("adamw", net, 1e-3, 0.1)
    assert adamw.defaults["foreach"] is True and not adamw.defaults["fused"]
    # a device with neither (e.g. a CPU-only build without fused kernels): torch's per-tensor loop
    monkeypatch.setattr(optim, "param_device_types", lambda params: {"cpu"})
    adamw = build_optimizer("adamw", net, 1e-3, 0.1)
    assert not adamw.defaults["foreach"] and not adamw.defaults["fused"]


@pytest.mark.parametrize("base", ["adamw", "sgd"])
def test_fused_update_equals_per_tensor_update(base, monkeypatch):
    import shared.optim as optim

    def train(fast_kernels: bool) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        with monkeypatch.context() as patch:
            if not fast_kernels:
                patch.setattr(optim, "fused_kernel_devices", lambda: [])
                patch.setattr(optim, "foreach_kernel_devices", lambda: [])
            optimizer = build_optimizer("sam", model, 1e-2, 0.1, sam_base=base)
        assert bool(optimizer.base_optimizer.defaults["fused"]) == fast_kernels
        stepper = OptimizationStep(model, optimizer)
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            stepper.step(lambda batch: model(batch).square().mean(), [x])
        return model

    for p, q in zip(train(True).parameters(), train(False).parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
