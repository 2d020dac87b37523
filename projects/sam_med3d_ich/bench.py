"""`make bench` rows for sam_med3d_ich, each measured against a baseline in the same process.

CPU: tiny-model training and inference throughput (volumes/s), and the peak memory of a training
step with gradient checkpointing relative to without (process RSS peak, a deeper tiny encoder so
activations dominate). GPU (when CUDA is available): full vit_b_ori at 128^3, batch 2, AMP on vs off.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from projects.sam_med3d_ich import model as model_module
from projects.sam_med3d_ich.inference import predict_volume
from projects.sam_med3d_ich.interaction import ClickRoundsForward
from projects.sam_med3d_ich.model import SamMed3DICH, build_parts
from shared.amp import AmpPolicy
from shared.memory import MemoryMonitor, free_memory, saved_activation_bytes


def training_loss(forward: ClickRoundsForward, images: torch.Tensor, labels: torch.Tensor,
                  amp: AmpPolicy) -> torch.Tensor:
    with amp.autocast():
        logits, ich_logit = forward(images, labels, torch.Generator().manual_seed(0))
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(x.float(), labels) for x in logits)
    return loss + ich_logit.float().sum()


def training_step(forward: ClickRoundsForward, images: torch.Tensor, labels: torch.Tensor, amp: AmpPolicy) -> None:
    training_loss(forward, images, labels, amp).backward()


def saved_activations_mb(model: SamMed3DICH, images, labels, amp: AmpPolicy, checkpointing: bool) -> float:
    model.image_encoder.gradient_checkpointing = checkpointing
    forward = ClickRoundsForward(model, num_rounds=2)
    saved, loss = saved_activation_bytes(lambda: training_loss(forward, images, labels, amp))
    loss.backward()  # checkpointed blocks must still backpropagate
    model.zero_grad(set_to_none=True)
    return saved / 2**20


def throughput(fn, volumes_per_call: int, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return volumes_per_call * repeats / (time.perf_counter() - start)


def peak_memory_mb(model: SamMed3DICH, images, labels, device, amp: AmpPolicy, checkpointing: bool) -> float:
    model.image_encoder.gradient_checkpointing = checkpointing
    forward = ClickRoundsForward(model, num_rounds=2)
    monitor = MemoryMonitor(device)
    free_memory()
    model.zero_grad(set_to_none=True)
    training_step(forward, images, labels, amp)  # allocator warm-up outside the measurement
    model.zero_grad(set_to_none=True)
    free_memory()
    monitor.reset_peak()
    training_step(forward, images, labels, amp)
    peak = monitor.peak()
    return peak.get("peak_gpu_allocated_mb", peak.get("peak_rss_mb", 0.0))


def cpu_rows() -> list[dict]:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    off = AmpPolicy.create(cpu, enabled=False)
    model = model_module.build_ich_model("tiny", 16, 32)
    images, labels = torch.rand(2, 1, 32, 32, 32), (torch.rand(2, 1, 32, 32, 32) > 0.97).float()
    forward = ClickRoundsForward(model, num_rounds=3)
    train_rate = throughput(lambda: training_step(forward, images, labels, off), 2, 4)
    model.eval()
    infer_rate = throughput(lambda: predict_volume(model, torch.rand(1, 1, 48, 48, 48), overlap=0.25), 1, 3)

    deep = dataclasses.replace(model_module.ARCHITECTURES["tiny"], encoder_depth=8, encoder_dim=128,
                               global_attn_indexes=(3, 7))
    deep_model = SamMed3DICH(*build_parts(deep), visual_tokens=16, visual_token_dim=32)
    big_images, big_labels = torch.rand(8, 1, 32, 32, 32), (torch.rand(8, 1, 32, 32, 32) > 0.97).float()
    without = peak_memory_mb(deep_model, big_images, big_labels, cpu, off, checkpointing=False)
    with_ckpt = peak_memory_mb(deep_model, big_images, big_labels, cpu, off, checkpointing=True)
    saved_without = saved_activations_mb(deep_model, big_images, big_labels, off, checkpointing=False)
    saved_with = saved_activations_mb(deep_model, big_images, big_labels, off, checkpointing=True)
    return [
        {"name": "med3d tiny train throughput", "value": train_rate, "unit": "volumes/s",
         "note": "32^3 crops, batch 2, 3 click rounds, fp32 CPU"},
        {"name": "med3d tiny sliding-window inference", "value": infer_rate, "unit": "volumes/s",
         "note": "48^3 volume, 32^3 windows, overlap 0.25"},
        {"name": "med3d activations saved for backward, checkpointing / none", "value": saved_with / saved_without,
         "unit": "ratio", "note": f"{saved_with:.0f} MB vs {saved_without:.0f} MB, depth-8 width-128 encoder, batch 8"},
        {"name": "med3d peak RSS, checkpointing / none", "value": with_ckpt / without, "unit": "ratio",
         "note": f"{with_ckpt:.0f} MB vs {without:.0f} MB (RSS is dominated by libraries and allocator caching)"},
    ]


def gpu_rows() -> list[dict]:
    device = torch.device("cuda")
    model = model_module.build_ich_model("vit_b_ori", 256, 768).to(device)
    images = torch.rand(2, 1, 128, 128, 128, device=device)
    labels = (torch.rand(2, 1, 128, 128, 128, device=device) > 0.97).float()
    forward = ClickRoundsForward(model, num_rounds=3)
    rows, results = [], {}
    for amp_on in (False, True):
        amp = AmpPolicy.create(device, enabled=amp_on)

        def step(amp=amp):
            training_step(forward, images, labels, amp)
            torch.cuda.synchronize()

        rate = throughput(step, 2, 3)
        peak = peak_memory_mb(model, images, labels, device, amp, checkpointing=False)
        results[amp_on] = (rate, peak)
    ckpt_peak = peak_memory_mb(model, images, labels, device, AmpPolicy.create(device, enabled=True), True)
    rows.append({"name": "med3d vit_b_ori train throughput, AMP / fp32", "value": results[True][0] / results[False][0],
                 "unit": "ratio", "note": f"{results[True][0]:.2f} vs {results[False][0]:.2f} volumes/s, 128^3, batch 2"})
    rows.append({"name": "med3d vit_b_ori peak memory, AMP / fp32", "value": results[True][1] / results[False][1],
                 "unit": "ratio", "note": f"{results[True][1]:.0f} vs {results[False][1]:.0f} MB allocated"})
    rows.append({"name": "med3d vit_b_ori peak memory, AMP+checkpointing / AMP", "value": ckpt_peak / results[True][1],
                 "unit": "ratio", "note": f"{ckpt_peak:.0f} vs {results[True][1]:.0f} MB allocated"})
    return rows


def run_bench() -> list[dict]:
    rows = cpu_rows()
    if torch.cuda.is_available():
        rows += gpu_rows()
    return rows


if __name__ == "__main__":
    for row in run_bench():
        print(f"{row['name']}: {row['value']:.3f} {row['unit']} ({row['note']})")
