"""Benchmark of the SAM step against its floor, measured in one process on a fixed CPU model.

    time(SAM step) / (time(AdamW step) + time(one more forward-backward))

The two-pass floor is 1.0. For comparison the same ratio is measured for a clone-per-step
implementation in the style of the reference (new copies of every weight each step). Memory:
bytes per parameter that SAM / ASAM keep over their base optimizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from shared.optim import build_optimizer
from shared.sam import SAM, OptimizationStep

WIDTH, DEPTH = 512, 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


def _interleaved_best_times(fns: dict[str, Callable[[], None]], rounds: int = 7, repeats: int = 8) -> dict[str, float]:
    """Seconds per call of each function: the rounds alternate between the functions and the best
    round counts, so a load spike on a shared machine hits every variant alike."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats)
    return best


class _CloneEachStepSAM:
    """The reference's memory pattern: `old_p = p.data.clone()` for every weight every step."""

    def __init__(self, model: nn.Module, rho: float = 0.05):
        self.params = [p for p in model.parameters()]
        self.base = torch.optim.AdamW(self.params, lr=1e-3, weight_decay=0.01)
        self.rho = rho

    def step(self, loss_fn: Callable[[], torch.Tensor]) -> None:
        self.base.zero_grad()
        loss_fn().backward()
        with torch.no_grad():
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in self.params]), 2)
            old = [p.data.clone() for p in self.params]
            for p in self.params:
                p.add_(p.grad * (self.rho / (norm + 1e-12)))
        self.base.zero_grad()
        loss_fn().backward()
        with torch.no_grad():
            for p, o in zip(self.params, old):
                p.data = o
        self.base.step()


def step_time_rows(batch_size: int) -> list[dict]:
    """SAM / ASAM / clone-per-step SAM against the two-pass floor, at one batch size."""
    x, y = torch.randn(batch_size, WIDTH), torch.randint(0, 10, (batch_size,))

    def sam_like_step(optimizer_name: str, adaptive: bool = False) -> Callable[[], None]:
        model = _model()
        optimizer = build_optimizer(optimizer_name, model, 1e-3, 0.01, sam_adaptive=adaptive,
                                    sam_rho=1.0 if adaptive else 0.05)
        stepper = OptimizationStep(model, optimizer)
        batch = [(x, y)]
        return lambda: stepper.step(lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), batch)

    model = _model()

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    reference_model = _model()
    reference = _CloneEachStepSAM(reference_model)
    times = _interleaved_best_times({
        "forward_backward": forward_backward,
        "adamw": sam_like_step("adamw"),
        "sam": sam_like_step("sam"),
        "asam": sam_like_step("sam", adaptive=True),
        "reference": lambda: reference.step(lambda: nn.functional.cross_entropy(reference_model(x), y)),
    })
    floor = times["adamw"] + times["forward_backward"]
    note = (f"MLP {DEPTH}x{WIDTH} (1.06M params), batch {batch_size}, CPU; floor = AdamW step + one "
            f"forward-backward = {1000 * floor:.2f} ms")
    return [{"name": f"shared.sam: {label} step / floor, batch {batch_size}", "value": times[key] / floor,
             "unit": "ratio", "note": note}
            for key, label in (("sam", "SAM"), ("asam", "ASAM"), ("reference", "clone-per-step SAM (reference style)"))]


def run_bench() -> list[dict]:
    """Small batches make the optimizer's own passes over the weights a large share of the step (the
    worst case for SAM's perturb/restore); large batches are closer to real training."""
    rows = step_time_rows(64) + step_time_rows(512)
    x, y = torch.randn(64, WIDTH), torch.randint(0, 10, (64,))

    for adaptive in (False, True):
        model = _model()
        optimizer = build_optimizer("sam", model, 1e-3, 0.01, sam_adaptive=adaptive)
        OptimizationStep(model, optimizer).step(lambda b, m=model: nn.functional.cross_entropy(m(b[0]), b[1]),
                                                [(x, y)])
        assert isinstance(optimizer, SAM)
        n_params = sum(p.numel() for p in model.parameters())
        extra = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t))
        rows.append({"name": f"shared.sam: {'ASAM' if adaptive else 'SAM'} extra optimizer memory over base",
                     "value": extra / n_params, "unit": "bytes/param",
                     "note": "persistent; the reference keeps one full fp32 copy (4 bytes/param)"})
    return rows
