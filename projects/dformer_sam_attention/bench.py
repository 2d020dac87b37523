"""`samkit bench`: DFormerv2 + the Semantic Alignment Module, measured on CPU, ratios in one process.

Every row says what it measured on what. "With alignment" is preset 1 (alignment after all four
encoder stages + the HSG decoder's alignment and text logits); "without" is preset 7, the same model
and HSG head with `--no-enable-text-guidance`, so the ratio is the module's cost alone.

- DFormerv2_Tiny, 64×64, batch 4: forward time and parameters, with vs without alignment.
- DFormerv2-S (NYU: 40 classes, 512-d text), 480×640, batch 1, one thread:
  - encoder forward, our attention (fused `scaled_dot_product_attention` over folded lines) vs the
    official formulation (explicit QKᵀ + geometry mask → softmax → ·V per row/column, as the official
    DFormerv2 code writes it), both built from our modules with the same weights; and their largest
    output difference;
  - one training step (forward, backward, AdamW update) with vs without alignment;
  - parameters and forward FLOPs (torch.utils.flop_counter) with vs without alignment;
  - peak RSS of a fresh process running one training step with vs without gradient checkpointing
    of the encoder blocks (each variant in its own subprocess, so the peaks do not mix).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from projects.dformer_sam_attention.models.builder import ModelSettings, build_model
from projects.dformer_sam_attention.models.encoders.DFormerv2 import (
    GeometryPrior,
    GeometrySelfAttention,
    rotate_every_two,
)
from shared.memory import cpu_threads

FULL_HW = (480, 640)


def sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU attention kernel, which flop_counter does not know: QKᵀ and A·V."""
    *batch, length, dim = query_shape
    heads = 1
    for size in batch:
        heads *= size
    return 2 * heads * length * key_shape[-2] * dim + 2 * heads * length * key_shape[-2] * value_shape[-1]


def settings(size: str, with_alignment: bool) -> ModelSettings:
    if size == "tiny":
        return ModelSettings(backbone="DFormerv2_Tiny", decoder="hsg", num_classes=5, decoder_embed_dim=32,
                             decoder_align_heads=2, text_embed_dim=32, drop_path_rate=0.0, text_dim=32,
                             text_guidance=with_alignment)
    return ModelSettings(backbone="DFormerv2_S", decoder="hsg", num_classes=40, decoder_embed_dim=512,
                         decoder_align_heads=8, text_embed_dim=256, drop_path_rate=0.0, text_dim=512,
                         text_guidance=with_alignment)


def build(size: str, with_alignment: bool, gradient_checkpointing: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    s = settings(size, with_alignment)
    text = F.normalize(torch.randn(s.num_classes, s.text_dim), dim=-1) if with_alignment else None
    return build_model(s, text, gradient_checkpointing=gradient_checkpointing).eval()


def official_attention_forward(self: GeometrySelfAttention, x: Tensor, prior: GeometryPrior) -> Tensor:
    """GeometrySelfAttention as the official DFormerv2 code computes it: explicit matmuls and softmax."""
    batch, height, width, channels = x.shape
    (sin, cos), mask = prior
    v_flat = self.v_proj(x)
    lepe = self.lepe(v_flat)
    v = self.split_heads(v_flat)
    q = rotate_every_two(self.split_heads(self.q_proj(x)), sin, cos) * self.head_dim**-0.5  # (B, h, H, W, d)
    k = rotate_every_two(self.split_heads(self.k_proj(x)), sin, cos)
    if self.decomposed:
        mask_h, mask_w = mask
        v = torch.softmax(q @ k.transpose(-1, -2) + mask_w, -1) @ v  # along rows
        q_t, k_t, v_t = q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3)
        out = (torch.softmax(q_t @ k_t.transpose(-1, -2) + mask_h, -1) @ v_t).transpose(2, 3)  # along columns
    else:
        q_f, k_f, v_f = q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3)
        out = (torch.softmax(q_f @ k_f.transpose(-1, -2) + mask, -1) @ v_f).view(batch, self.num_heads, height,
                                                                                   width, self.head_dim)
    out = out.permute(0, 2, 3, 1, 4).reshape(batch, height, width, channels)
    return self.out_proj(out + lepe)


@contextmanager
def official_formulation():
    with mock.patch.object(GeometrySelfAttention, "forward", official_attention_forward):
        yield


@torch.no_grad()
def forward_seconds(models: dict[bool, torch.nn.Module], rgb: Tensor, depth: Tensor,
                    repeats: int) -> dict[bool, float]:
    """Best-of-n forward time per model, the models interleaved so load changes hit both alike."""
    best = {key: float("inf") for key in models}
    for _ in range(repeats):
        for key, model in models.items():
            start = time.perf_counter()
            model(rgb, depth)
            best[key] = min(best[key], time.perf_counter() - start)
    return best


@torch.no_grad()
def forward_flops(model: torch.nn.Module, rgb: Tensor, depth: Tensor) -> int:
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flops}  # keyed by packet
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        model(rgb, depth)
    return counter.get_total_flops()


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rgb: Tensor, depth: Tensor,
                  label: Tensor) -> float:
    """Seconds of one forward + backward + AdamW update."""
    start = time.perf_counter()
    loss = F.cross_entropy(model(rgb, depth), label)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def full_size_batch() -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(1, 3, *FULL_HW, generator=generator), torch.rand(1, 1, *FULL_HW, generator=generator),
            torch.randint(0, 40, (1, *FULL_HW), generator=generator))


def high_water_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: per address space, so a fresh process starts at its
    own, unlike ru_maxrss, which a child inherits from its parent)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6  # kB → GB
    raise RuntimeError("no VmHWM in /proc/self/status")


def step_peak_rss(gradient_checkpointing: bool) -> dict[str, float]:
    """Run in a fresh process: peak RSS before and after one full-size training step (preset 1)."""
    torch.set_num_threads(1)
    model = build("S", True, gradient_checkpointing).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5)
    rgb, depth, label = full_size_batch()
    before = high_water_rss_gb()
    training_step(model, optimizer, rgb, depth, label)
    return {"before_gb": before, "peak_gb": high_water_rss_gb()}


def start_step_subprocess(gradient_checkpointing: bool) -> subprocess.Popen:
    code = ("import json; from projects.dformer_sam_attention.bench import step_peak_rss; "
            f"print(json.dumps(step_peak_rss({gradient_checkpointing})))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_step_subprocess(process: subprocess.Popen) -> dict[str, float]:
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench subprocess failed: {err.strip().splitlines()[-1] if err.strip() else '?'}")
    return json.loads(out.strip().splitlines()[-1])


def run_bench() -> list[dict]:
    with cpu_threads(1):  # one thread: stable ratios on a shared CPU (two threads spin under load)
        return measure()


def measure() -> list[dict]:
    rows = []
    rgb, depth = torch.randn(4, 3, 64, 64), torch.rand(4, 1, 64, 64)
    tiny = {flag: build("tiny", flag) for flag in (True, False)}
    for model in tiny.values():
        model(rgb, depth)  # warm-up
    times = forward_seconds(tiny, rgb, depth, repeats=20)
    t_with, t_without = times[True], times[False]
    rows.append({"name": "tiny_forward_time_ratio", "value": t_with / t_without, "unit": "x",
                 "note": f"DFormerv2_Tiny 64x64 batch 4, forward: {1e3 * t_with:.1f} ms with alignment (preset 1) vs "
                         f"{1e3 * t_without:.1f} ms without (preset 7)"})
    rows.append({"name": "tiny_params_ratio", "value": params(tiny[True]) / params(tiny[False]), "unit": "x",
                 "note": f"DFormerv2_Tiny: {params(tiny[True])} vs {params(tiny[False])} parameters"})
    rows += measure_full_size()
    return rows


def measure_full_size() -> list[dict]:
    rows = []
    rgb, depth, label = full_size_batch()
    encoder = build("S", False).backbone.eval()  # no alignment modules: DFormerv2-S as published
    with torch.no_grad():
        encoder(rgb, depth)  # warm-up
        start = time.perf_counter()
        ours_out = encoder(rgb, depth)
        ours = time.perf_counter() - start
        with official_formulation():
            start = time.perf_counter()
            official_out = encoder(rgb, depth)
            official = time.perf_counter() - start
    difference = max(float((a - b).abs().max()) for a, b in zip(ours_out, official_out))
    rows.append({"name": "S_480x640_encoder_forward_ours_vs_official", "value": ours / official, "unit": "x",
                 "note": f"DFormerv2-S encoder, 1x480x640, CPU 1 thread, one forward each after a warm-up: "
                         f"{ours:.2f} s (fused SDPA over folded lines) vs {official:.2f} s (official formulation: "
                         f"explicit softmax, same weights); max output difference {difference:.1e}"})
    del encoder, ours_out, official_out

    models = {flag: build("S", flag).train() for flag in (True, False)}
    optimizers = {flag: torch.optim.AdamW(m.parameters(), lr=6e-5) for flag, m in models.items()}
    seconds = {flag: training_step(models[flag], optimizers[flag], rgb, depth, label) for flag in (True, False)}
    rows.append({"name": "S_480x640_train_step_time_ratio", "value": seconds[True] / seconds[False], "unit": "x",
                 "note": f"DFormerv2-S + HSG, 1x480x640, one forward+backward+AdamW step, CPU 1 thread: "
                         f"{seconds[True]:.1f} s with alignment (preset 1) vs {seconds[False]:.1f} s without (preset 7)"})
    p_with, p_without = params(models[True]), params(models[False])
    rows.append({"name": "S_480x640_params_ratio", "value": p_with / p_without, "unit": "x",
                 "note": f"DFormerv2-S + HSG: {p_with / 1e6:.2f}M (preset 1) vs {p_without / 1e6:.2f}M (preset 7)"})
    del models, optimizers
    with torch.device("meta"):  # FLOPs depend on shapes only: counted without computing
        meta = {flag: build("S", flag) for flag in (True, False)}
        f_with, f_without = (forward_flops(meta[f], rgb.to("meta"), depth.to("meta")) for f in (True, False))
    rows.append({"name": "S_480x640_flops_ratio", "value": f_with / f_without, "unit": "x",
                 "note": f"DFormerv2-S + HSG, 1x480x640 forward: {f_with / 1e9:.1f} vs {f_without / 1e9:.1f} GFLOPs "
                         "(torch.utils.flop_counter on the meta device, 2 per MAC)"})

    # the two checkpointing variants in fresh processes side by side, after every timing here (they
    # share the CPU, so only their peak memory is reported)
    processes = {flag: start_step_subprocess(flag) for flag in (False, True)}
    plain, checkpointed = (finish_step_subprocess(processes[flag]) for flag in (False, True))
    rows.append({"name": "S_480x640_gradient_checkpointing_peak_rss_ratio",
                 "value": checkpointed["peak_gb"] / plain["peak_gb"], "unit": "x",
                 "note": f"DFormerv2-S preset 1, 1x480x640, one forward+backward+AdamW step in a fresh process each: "
                         f"peak RSS {checkpointed['peak_gb']:.2f} GB with encoder checkpointing vs "
                         f"{plain['peak_gb']:.2f} GB without; the step itself added "
                         f"{checkpointed['peak_gb'] - checkpointed['before_gb']:.2f} vs "
                         f"{plain['peak_gb'] - plain['before_gb']:.2f} GB"})
    return rows


if __name__ == "__main__":
    for row in run_bench():
        print(f"{row['name']:48s} {row['value']:10.4f} {row['unit']:7s} {row['note']}")
