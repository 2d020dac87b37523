"""Benchmark of the SAM step against its floor, measured in one process on fixed models.

    time(SAM step) / (time(AdamW step) + time(one more forward-backward))

The two-pass floor is 1.0: SAM needs two forward-backward passes and one base-optimizer update, so
anything above 1.0 is SAM's own work (ascent norm, save, perturb, restore) and overhead. Two models:
an MLP (Linear + LayerNorm + GELU) and a ViT-like model (pre-norm blocks of SDPA attention and a 4x
MLP on a token sequence), each at an optimizer-heavy small batch (the worst case for SAM's passes
over the weights) and a compute-heavy batch (closer to real training). For comparison the same ratio
is measured for a clone-per-step SAM in the style of the reference (new copies of every weight each
step) over the same base optimizer, so that row differs from ours only in SAM's own mechanics.
Memory: bytes per parameter that SAM / ASAM keep over their base optimizer.

On CPU the timings are this process's CPU time on one thread (a shared machine's other jobs do not
count); `step_time_ratios` also runs on a CUDA device (wall time between `torch.cuda.synchronize()`
calls), which is how `make gpu-check` measures the same ratio on a GPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.memory import cpu_threads
from shared.optim import build_optimizer
from shared.sam import SAM, OptimizationStep

NUM_CLASSES = 10


# -------------------------------------------------------------------------------------------------
# The models


def mlp(width: int = 512, depth: int = 4) -> nn.Module:
    """(B, width) -> (B, 10) logits."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, NUM_CLASSES))


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (flash / memory-efficient
    kernels on CUDA)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTLike(nn.Module):
    """Patch tokens (B, N, patch_dim) -> (B, 10) logits: linear patch embedding, learned positions,
    pre-norm transformer blocks, mean-pooled head. `gradient_checkpointing` recomputes each block in
    the backward pass instead of keeping its activations."""

    def __init__(self, dim: int = 192, depth: int = 4, heads: int = 3, tokens: int = 64, patch_dim: int = 48,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.patch_embed = nn.Linear(patch_dim, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, patches: Tensor) -> Tensor:
        x = self.patch_embed(patches) + self.pos_embed  # (B, N, D)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.norm(x).mean(dim=1))


@dataclass(frozen=True)
class BenchModel:
    build: Callable[[], nn.Module]
    make_input: Callable[[int, torch.Generator], Tensor]  # batch size -> model input (on CPU)
    description: str


def _mlp_input(batch: int, generator: torch.Generator) -> Tensor:
    return torch.randn(batch, 512, generator=generator)


def _vit_input(batch: int, generator: torch.Generator) -> Tensor:
    return torch.randn(batch, 64, 48, generator=generator)


MODELS = {
    "mlp": BenchModel(mlp, _mlp_input, "MLP 4x512 (1.06M params)"),
    "vit": BenchModel(ViTLike, _vit_input, "ViT-like 4 blocks x 192 wide, 64 tokens, SDPA (1.79M params)"),
}
# (optimizer-heavy, compute-heavy) batch sizes measured by `make bench` on CPU
CPU_BATCHES = {"mlp": (64, 512), "vit": (4, 32)}


# -------------------------------------------------------------------------------------------------
# Timing


def interleaved_times(fns: dict[str, Callable[[], None]], rounds: int = 7, repeats: int = 8,
                      sync: Callable[[], None] = lambda: None,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each function in each round. Every round times every function once, the
    order rotating from round to round (no variant always runs right after the same other one), so
    a load change on a shared machine hits the variants of a round alike. `sync` waits for queued
    device work (torch.cuda.synchronize on a GPU) before each clock reading. `clock`: wall time by
    default; `time.process_time` counts only this process's CPU time, which on a shared CPU leaves
    out the time slices other jobs take (one thread: CPU time is then the time of the work)."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = clock()
            for _ in range(repeats):
                fns[name]()
            sync()
            times[name].append((clock() - start) / repeats)
    return times


class CloneEachStepSAM:
    """The reference's memory pattern: `old_p = p.data.clone()` for every weight every step, the
    perturbation through a temporary `p.grad * scale`, the norm as a stack of per-tensor norms."""

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer, rho: float = 0.05):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.base = base
        self.rho = rho

    def step(self, loss_fn: Callable[[], Tensor]) -> None:
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


def step_times(model_name: str, batch_size: int, device: torch.device | str = "cpu", rounds: int = 7,
               repeats: int = 8) -> dict[str, list[float]]:
    """Seconds per step, per round, of forward-backward, AdamW, SAM, ASAM and clone-per-step SAM
    (over the same AdamW)."""
    device = torch.device(device)
    spec = MODELS[model_name]
    generator = torch.Generator().manual_seed(0)
    x = spec.make_input(batch_size, generator).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator).to(device)

    def fresh_model() -> nn.Module:
        torch.manual_seed(0)
        return spec.build().to(device)

    def stepper(optimizer_name: str, adaptive: bool = False) -> Callable[[], None]:
        model = fresh_model()
        optimizer = build_optimizer(optimizer_name, model, 1e-3, 0.01, sam_adaptive=adaptive,
                                    sam_rho=1.0 if adaptive else 0.05)
        step = OptimizationStep(model, optimizer)
        batch = [(x, y)]
        return lambda: step.step(lambda b: F.cross_entropy(model(b[0]), b[1]), batch)

    model = fresh_model()

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    reference_model = fresh_model()
    reference = CloneEachStepSAM(reference_model, build_optimizer("adamw", reference_model, 1e-3, 0.01))
    on_gpu = device.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    return interleaved_times({
        "forward_backward": forward_backward,
        "adamw": stepper("adamw"),
        "sam": stepper("sam"),
        "asam": stepper("sam", adaptive=True),
        "reference": lambda: reference.step(lambda: F.cross_entropy(reference_model(x), y)),
    }, rounds=rounds, repeats=repeats, sync=sync, clock=time.perf_counter if on_gpu else time.process_time)


def step_time_ratios(model_name: str, batch_size: int, device: torch.device | str = "cpu", rounds: int = 7,
                     repeats: int = 8) -> dict[str, float]:
    """SAM / ASAM / clone-per-step SAM step time over the floor (AdamW step + one forward-backward),
    each the median over rounds of that round's ratio, and the floor's median in ms."""
    times = step_times(model_name, batch_size, device, rounds, repeats)
    floors = [a + f for a, f in zip(times["adamw"], times["forward_backward"])]
    ratios = {key: statistics.median(t / floor for t, floor in zip(times[key], floors))
              for key in ("sam", "asam", "reference")}
    return {**ratios, "floor_ms": 1000 * statistics.median(floors), "rounds": rounds}


def step_time_rows(model_name: str, batch_size: int, rounds: int = 12, repeats: int = 3) -> list[dict]:
    """On one CPU thread: on a small shared machine a second thread mostly waits for a busy core, and
    that noise would swamp the few per cent being measured."""
    with cpu_threads(1):
        ratios = step_time_ratios(model_name, batch_size, "cpu", rounds, repeats)
    note = (f"{MODELS[model_name].description}, batch {batch_size}, CPU (1 thread, process CPU time); "
            f"floor = AdamW step + one forward-backward = {ratios['floor_ms']:.2f} ms; median of {rounds} "
            "interleaved rounds' ratios, measured")
    labels = (("sam", "SAM"), ("asam", "ASAM"), ("reference", "clone-per-step SAM (reference style)"))
    return [{"name": f"shared.sam: {label} step / floor, {model_name} batch {batch_size}", "value": ratios[key],
             "unit": "ratio", "note": note} for key, label in labels]


def optimizer_memory_rows() -> list[dict]:
    rows = []
    x, y = _mlp_input(64, torch.Generator().manual_seed(0)), torch.randint(0, NUM_CLASSES, (64,))
    for adaptive in (False, True):
        torch.manual_seed(0)
        model = mlp()
        optimizer = build_optimizer("sam", model, 1e-3, 0.01, sam_adaptive=adaptive)
        OptimizationStep(model, optimizer).step(lambda b, m=model: F.cross_entropy(m(b[0]), b[1]), [(x, y)])
        assert isinstance(optimizer, SAM)
        n_params = sum(p.numel() for p in model.parameters())
        extra = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t))
        rows.append({"name": f"shared.sam: {'ASAM' if adaptive else 'SAM'} extra optimizer memory over base",
                     "value": extra / n_params, "unit": "bytes/param",
                     "note": "persistent; the reference keeps one full fp32 copy (4 bytes/param); measured on the MLP"})
    return rows


def adamw_kernel_rows() -> list[dict]:
    """torch's fused AdamW update (what build_optimizer picks on CPU and CUDA) against its foreach and
    per-tensor paths, on the MLP's parameters with fixed gradients."""
    torch.manual_seed(0)
    model = mlp()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizers = {kind: torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01, **kwargs)
                  for kind, kwargs in (("fused", {"fused": True}), ("foreach", {"foreach": True}),
                                       ("per-tensor", {"foreach": False}))}
    with cpu_threads(1):
        times = interleaved_times({kind: opt.step for kind, opt in optimizers.items()}, rounds=12, repeats=5,
                                  clock=time.process_time)
    fused = statistics.median(times["fused"])
    return [{"name": f"shared.optim: fused AdamW step / {kind} AdamW step", "unit": "ratio",
             "value": statistics.median(f / t for f, t in zip(times["fused"], times[kind])),
             "note": f"MLP 4x512 (1.06M params), CPU (1 thread, process CPU time); fused step {1000 * fused:.2f} ms; measured"}
            for kind in ("foreach", "per-tensor")]


def run_bench() -> list[dict]:
    """Both models at their optimizer-heavy and compute-heavy batch, then the memory rows."""
    rows = []
    for model_name, batches in CPU_BATCHES.items():
        for batch in batches:  # one step per timing for the ViT's ~1 s compute-heavy steps
            rows += step_time_rows(model_name, batch, repeats=1 if (model_name, batch) == ("vit", 32) else 3)
    return rows + optimizer_memory_rows() + adamw_kernel_rows()
