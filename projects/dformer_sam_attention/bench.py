"""`samkit bench`: cost of the Semantic Alignment Module, with vs without, in one process.

Rows (ratios are with / without the module; "with" is preset 1: alignment after all four encoder
stages + the HSG decoder's alignment and text logits; "without" is the same model and HSG head with
`--no-enable-text-guidance`, so the ratio is the module's cost alone — preset 5 also swaps in the
LightHamHead):
- DFormerv2_Tiny, 64×64, batch 4: forward time and parameter count;
- DFormerv2-S (NYU: 40 classes, 512-d CLIP text), one 480×640 image: forward time, parameters and
  FLOPs from torch.utils.flop_counter (one forward per variant, to keep CPU time modest).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from projects.dformer_sam_attention.models.builder import ModelSettings, build_model
from shared.memory import cpu_threads


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


def build(size: str, with_alignment: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    s = settings(size, with_alignment)
    text = torch.nn.functional.normalize(torch.randn(s.num_classes, s.text_dim), dim=-1) if with_alignment else None
    return build_model(s, text).eval()


@torch.no_grad()
def forward_seconds(models: dict[bool, torch.nn.Module], rgb: torch.Tensor, depth: torch.Tensor,
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
def forward_flops(model: torch.nn.Module, rgb: torch.Tensor, depth: torch.Tensor) -> int:
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flops}  # keyed by packet
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        model(rgb, depth)
    return counter.get_total_flops()


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
    p_with, p_without = params(tiny[True]), params(tiny[False])
    rows.append({"name": "tiny_forward_time_ratio", "value": t_with / t_without, "unit": "x",
                 "note": f"DFormerv2_Tiny 64x64 batch 4: {1e3 * t_with:.1f} ms with alignment vs "
                         f"{1e3 * t_without:.1f} ms without"})
    rows.append({"name": "tiny_params_ratio", "value": p_with / p_without, "unit": "x",
                 "note": f"{p_with} vs {p_without} parameters"})

    rgb, depth = torch.randn(1, 3, 480, 640), torch.rand(1, 1, 480, 640)
    small = {flag: build("S", flag) for flag in (True, False)}
    times = forward_seconds(small, rgb, depth, repeats=1)
    s_with, s_without = times[True], times[False]
    f_with, f_without = (forward_flops(small[f], rgb, depth) for f in (True, False))
    p_with, p_without = params(small[True]), params(small[False])
    rows.append({"name": "S_480x640_forward_time_ratio", "value": s_with / s_without, "unit": "x",
                 "note": f"DFormerv2-S 1x480x640: {s_with:.2f} s vs {s_without:.2f} s (CPU, one timed forward)"})
    rows.append({"name": "S_480x640_params_ratio", "value": p_with / p_without, "unit": "x",
                 "note": f"{p_with / 1e6:.2f}M vs {p_without / 1e6:.2f}M parameters"})
    rows.append({"name": "S_480x640_flops_ratio", "value": f_with / f_without, "unit": "x",
                 "note": f"{f_with / 1e9:.1f} vs {f_without / 1e9:.1f} GFLOPs (torch.utils.flop_counter, 2 per MAC, "
                         "fused CPU attention counted as QK^T + AV)"})
    rows.append({"name": "S_480x640_gflops_with_alignment", "value": f_with / 1e9, "unit": "GFLOPs",
                 "note": "one forward, preset 1"})
    return rows


if __name__ == "__main__":
    for row in run_bench():
        print(f"{row['name']:36s} {row['value']:10.4f} {row['unit']:7s} {row['note']}")
