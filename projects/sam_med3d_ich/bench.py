"""`make bench` rows for sam_med3d_ich, each measured against a baseline in the same process.

- Full size (CPU): one training step of the real `vit_b_ori` at 128^3 (random weights, generated
  volumes; batch 2, the automatic round + the recipe's click rounds, loss, backward, AdamW step), with
  and without gradient checkpointing: the process's peak RSS during the step (VmHWM reset before it,
  after a warm-up step that allocated the AdamW state) and the bytes autograd keeps for backward.
- Tiny model (CPU): training and sliding-window inference throughput, labelled as tiny.
- GPU (when CUDA is available): vit_b_ori at 128^3, AMP against fp32 and checkpointing against none.

    flock /tmp/bigmem.lock .venv/bin/python projects/sam_med3d_ich/bench.py     # about 6 GB of RAM
"""

from __future__ import annotations

import time

import torch

from projects.sam_med3d_ich import model as model_module
from projects.sam_med3d_ich.config import TrainConfig
from projects.sam_med3d_ich.inference import predict_volume
from projects.sam_med3d_ich.interaction import ClickRoundsForward
from projects.sam_med3d_ich.model import SamMed3DICH
from shared.amp import AmpPolicy
from shared.memory import MemoryMonitor, free_memory, saved_activation_bytes
from shared.optim import build_optimizer

FULL_BATCH = 2  # the recipe's --batch_size


def training_loss(forward: ClickRoundsForward, images: torch.Tensor, labels: torch.Tensor,
                  amp: AmpPolicy) -> torch.Tensor:
    with amp.autocast():
        logits, ich_logit = forward(images, labels, torch.Generator().manual_seed(0))
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(x.float(), labels) for x in logits)
    return loss + ich_logit.float().sum()


def training_step(forward: ClickRoundsForward, optimizer: torch.optim.Optimizer | None, images: torch.Tensor,
                  labels: torch.Tensor, amp: AmpPolicy) -> None:
    training_loss(forward, images, labels, amp).backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def generated_batch(size: int, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, size, size, size, generator=generator)
    labels = torch.zeros(batch, 1, size, size, size)
    labels[:, :, size // 3:size // 2, size // 3:size // 2, size // 3:size // 2] = 1  # one cubic "bleed"
    return images.to(device), labels.to(device)


def throughput(fn, volumes_per_call: int, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return volumes_per_call * repeats / (time.perf_counter() - start)


def step_peak_mb(model: SamMed3DICH, optimizer, images, labels, device, amp: AmpPolicy, checkpointing: bool) -> float:
    """Peak memory of one training step (GPU allocated on CUDA, process RSS on CPU), measured after
    `free_memory()` with the gradients released and the optimiser state already allocated."""
    model.image_encoder.gradient_checkpointing = checkpointing
    forward = ClickRoundsForward(model, TrainConfig().num_clicks)
    monitor = MemoryMonitor(device)
    free_memory()
    monitor.reset_peak()
    training_step(forward, optimizer, images, labels, amp)
    peak = monitor.peak()
    return peak.get("peak_gpu_allocated_mb", peak.get("peak_rss_mb", 0.0))


def saved_mb(model: SamMed3DICH, images, labels, amp: AmpPolicy, checkpointing: bool) -> float:
    model.image_encoder.gradient_checkpointing = checkpointing
    forward = ClickRoundsForward(model, TrainConfig().num_clicks)
    saved, loss = saved_activation_bytes(lambda: training_loss(forward, images, labels, amp))
    loss.backward()  # checkpointed blocks must still backpropagate
    model.zero_grad(set_to_none=True)
    return saved / 2**20


def full_size_rows() -> list[dict]:
    """vit_b_ori at 128^3 on the CPU, random weights: checkpointing measured, not extrapolated."""
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    off = AmpPolicy.create(cpu, enabled=False)
    model = model_module.build_ich_model("vit_b_ori", 256, 768)
    optimizer = build_optimizer("adamw", model, 1e-4, 0.1)
    images, labels = generated_batch(128, FULL_BATCH)
    started = time.perf_counter()
    training_step(ClickRoundsForward(model, TrainConfig().num_clicks), optimizer, images, labels, off)  # AdamW state
    warmup_s = time.perf_counter() - started
    static_mb = MemoryMonitor(cpu).current()["rss_mb"]
    with_ckpt = step_peak_mb(model, optimizer, images, labels, cpu, off, checkpointing=True)
    without = step_peak_mb(model, optimizer, images, labels, cpu, off, checkpointing=False)
    saved_with = saved_mb(model, images, labels, off, checkpointing=True)
    saved_without = saved_mb(model, images, labels, off, checkpointing=False)
    what = (f"vit_b_ori 128^3, batch {FULL_BATCH}, automatic + {TrainConfig().num_clicks} click rounds, "
            "fp32 CPU, random weights")
    return [
        {"name": "med3d vit_b_ori train-step peak RSS, no checkpointing / checkpointing", "value": without / with_ckpt,
         "unit": "x", "note": f"{without:.0f} MB vs {with_ckpt:.0f} MB peak RSS of one step incl. AdamW update "
                              f"(before the step: {static_mb:.0f} MB = libraries, weights, AdamW state); {what}; "
                              f"one step took {warmup_s:.0f} s"},
        {"name": "med3d vit_b_ori activations kept for backward, no checkpointing / checkpointing",
         "value": saved_without / saved_with, "unit": "x",
         "note": f"{saved_without:.0f} MB vs {saved_with:.0f} MB saved tensors (autograd hooks); {what}"},
    ]


def tiny_rows() -> list[dict]:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    off = AmpPolicy.create(cpu, enabled=False)
    model = model_module.build_ich_model("tiny", 16, 32)
    images, labels = generated_batch(32, 2)
    forward = ClickRoundsForward(model, TrainConfig().num_clicks)
    train_rate = throughput(lambda: training_step(forward, None, images, labels, off), 2, 4)
    model.eval()
    infer_rate = throughput(lambda: predict_volume(model, torch.rand(1, 1, 48, 48, 48), overlap=0.25), 1, 3)
    return [
        {"name": "med3d tiny model train throughput", "value": train_rate, "unit": "volumes/s",
         "note": "tiny model (not vit_b_ori), 32^3 crops, batch 2, forward + backward, fp32 CPU"},
        {"name": "med3d tiny model sliding-window inference", "value": infer_rate, "unit": "volumes/s",
         "note": "tiny model (not vit_b_ori), 48^3 volume, 32^3 windows, overlap 0.25"},
    ]


def gpu_rows() -> list[dict]:
    device = torch.device("cuda")
    model = model_module.build_ich_model("vit_b_ori", 256, 768).to(device)
    images, labels = generated_batch(128, FULL_BATCH, device)
    forward = ClickRoundsForward(model, TrainConfig().num_clicks)
    results = {}
    for amp_on in (False, True):
        amp = AmpPolicy.create(device, enabled=amp_on)

        def step(amp=amp):
            training_step(forward, None, images, labels, amp)
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()

        results[amp_on] = (throughput(step, FULL_BATCH, 3),
                           step_peak_mb(model, None, images, labels, device, amp, checkpointing=False))
    ckpt_peak = step_peak_mb(model, None, images, labels, device, AmpPolicy.create(device, enabled=True), True)
    what = f"vit_b_ori 128^3, batch {FULL_BATCH}, forward + backward"
    return [
        {"name": "med3d vit_b_ori train throughput, AMP / fp32", "value": results[True][0] / results[False][0],
         "unit": "ratio", "note": f"{results[True][0]:.2f} vs {results[False][0]:.2f} volumes/s, {what}"},
        {"name": "med3d vit_b_ori peak memory, AMP / fp32", "value": results[True][1] / results[False][1],
         "unit": "ratio", "note": f"{results[True][1]:.0f} vs {results[False][1]:.0f} MB allocated, {what}"},
        {"name": "med3d vit_b_ori peak memory, AMP+checkpointing / AMP", "value": ckpt_peak / results[True][1],
         "unit": "ratio", "note": f"{ckpt_peak:.0f} vs {results[True][1]:.0f} MB allocated, {what}"},
    ]


def run_bench() -> list[dict]:
    rows = tiny_rows() + full_size_rows()
    if torch.cuda.is_available():
        rows += gpu_rows()
    return rows


if __name__ == "__main__":
    for row in run_bench():
        print(f"{row['name']}: {row['value']:.3f} {row['unit']} ({row['note']})")
