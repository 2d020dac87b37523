"""Benchmarks, ratios against a baseline measured in the same process; each row says what it measured on what.

Real size (CPU, about 8 GB of RAM: run it alone):
1. One training step of the real `google/siglip2-base-patch16-naflex` architecture (random weights
   built from its config, no download; 375 M parameters) on generated recordings: AdamW vs SAM, each
   with and without gradient checkpointing of both towers: step time, and the activations autograd
   keeps for backward (process RSS cannot show the cut here: the steps share one process, whose
   allocator keeps the pages of the first step's activations; make gpu-check reports peak CUDA memory).
Tiny model:
2. Training throughput, SAM vs AdamW (two forward/backward passes per step: expected near 0.5).
3. Data time of epoch 1 (log-mel cache cold: audio decoding + mel filterbank) vs epoch 2 (cache
   warm: one np.load per recording), the cache's whole point.

    python -m projects.siglip_sam_dementia.bench            # add --tiny_only to skip the real-size rows
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams
from projects.siglip_sam_dementia.config import TrainingConfig
from projects.siglip_sam_dementia.data_processor import DementiaCollator, build_datasets
from projects.siglip_sam_dementia.full_size import BASE_NAFLEX_VOCAB, random_backbone, synthetic_batch
from projects.siglip_sam_dementia.model import (
    DementiaClassifier,
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
)
from projects.siglip_sam_dementia.synthetic import make_synthetic_corpus
from projects.siglip_sam_dementia.tiny_model import make_tiny_siglip2
from shared.memory import cpu_threads, saved_activation_bytes
from shared.optim import build_optimizer
from shared.sam import OptimizationStep

BATCH_SIZE = 8
TIMED_STEPS = 15
# Real size: recordings per step, each one 10 s window (128 mels x 1000 frames -> 256 NaFlex patches)
# and one full 64-token transcript; the step after one warm-up step (which allocates the optimizer state).
FULL_BATCH = 4
FULL_THREADS = 2
GB = 1024.0**3


def timed_step(stepper: OptimizationStep, loss_fn, batch: dict) -> float:
    """Seconds of one step."""
    gc.collect()
    started = time.perf_counter()
    stepper.step(loss_fn, [batch])
    return time.perf_counter() - started


def full_size_rows() -> list[dict]:
    """Per optimizer: a warm-up step (allocates its state), a step without and a step with gradient
    checkpointing of both towers, switched on one model by the functions the trainer uses."""
    with cpu_threads(FULL_THREADS):
        backbone = random_backbone("full")
        model = DementiaClassifier("google/siglip2-base-patch16-naflex (random)", backbone=backbone).train()
        parameters = sum(p.numel() for p in model.parameters())
        batch = synthetic_batch(FULL_BATCH, BASE_NAFLEX_VOCAB)

        def loss_fn(b: dict) -> torch.Tensor:
            return F.cross_entropy(model(**b["inputs"]), b["labels"])

        saved = {}
        for checkpointing in (False, True):
            (enable_gradient_checkpointing if checkpointing else disable_gradient_checkpointing)(backbone)
            saved[checkpointing], loss = saved_activation_bytes(lambda: loss_fn(batch))
            del loss
        measured: dict[tuple[str, bool], float] = {}
        for name in ("adamw", "sam"):
            stepper = OptimizationStep(model, build_optimizer(name, model, lr=1e-5, weight_decay=0.01))
            disable_gradient_checkpointing(backbone)
            stepper.step(loss_fn, [batch])  # warm-up
            measured[(name, False)] = timed_step(stepper, loss_fn, batch)
            enable_gradient_checkpointing(backbone)
            measured[(name, True)] = timed_step(stepper, loss_fn, batch)
            del stepper
            model.zero_grad(set_to_none=True)
    what = (f"siglip2-base-patch16-naflex architecture, random weights ({parameters / 1e6:.0f} M parameters), "
            f"multimodal concat, batch {FULL_BATCH} recordings x (one 10 s window = 256 patches + 64 tokens), "
            f"CPU fp32, {FULL_THREADS} threads, one step after a warm-up step")
    adamw = measured[("adamw", False)]
    timing = ("one step each, in this order after a warm-up; on a loaded shared CPU a single step's ratio carries "
              "the load: make gpu-check's mean of 3 steps is the reliable timing")
    rows = [{"name": "dementia full size: AdamW step", "value": adamw, "unit": "s", "note": what},
            {"name": "dementia full size: SAM / AdamW step time", "value": measured[("sam", False)] / adamw,
             "unit": "ratio", "note": f"no checkpointing; two passes per SAM step; {timing}"}]
    for name in ("adamw", "sam"):
        rows.append({"name": f"dementia full size: {name} step time, gradient checkpointing / none",
                     "value": measured[(name, True)] / measured[(name, False)], "unit": "ratio",
                     "note": f"both towers' encoder layers recomputed in backward; {timing}"})
    rows.append({"name": "dementia full size: activations kept for backward, gradient checkpointing / none",
                 "value": saved[True] / saved[False], "unit": "ratio",
                 "note": f"{saved[False] / GB:.2f} GB vs {saved[True] / GB:.2f} GB saved by autograd in one forward "
                         "(shared.memory.saved_activation_bytes)"})
    return rows


def training_samples_per_second(model_dir: Path, batch: dict, optimizer_names: tuple[str, ...]) -> dict[str, float]:
    """Samples/s per optimizer; steps of the optimizers are interleaved in rounds and the median
    round is kept, so a load spike on a shared machine hits both sides alike."""
    steppers = {}
    for name in optimizer_names:
        torch.manual_seed(0)
        model = DementiaClassifier(str(model_dir))
        steppers[name] = (model, OptimizationStep(model, build_optimizer(name, model, lr=1e-3, weight_decay=0.01)))

    def one_step(name: str) -> float:
        model, stepper = steppers[name]
        started = time.perf_counter()
        stepper.step(lambda b: F.cross_entropy(model(**b["inputs"]), b["labels"]), [batch])
        return time.perf_counter() - started

    for name in optimizer_names:  # warm-up
        one_step(name)
    seconds = {name: [] for name in optimizer_names}
    for _ in range(TIMED_STEPS):
        for name in optimizer_names:
            seconds[name].append(one_step(name))
    return {name: BATCH_SIZE / statistics.median(times) for name, times in seconds.items()}


def data_epoch_seconds(config: TrainingConfig, cache: LogMelCache, collator_for) -> tuple[float, float]:
    """(epoch 1: build datasets with a cold cache + one pass of batches, epoch 2: one pass again)."""
    started = time.perf_counter()
    datasets, _ = build_datasets(config, cache)
    collator = collator_for()
    loader = torch.utils.data.DataLoader(datasets["train"], batch_size=BATCH_SIZE, collate_fn=collator)
    for _ in loader:
        pass
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in loader:
        pass
    return first, time.perf_counter() - started


def run_bench(full_size: bool = True) -> list[dict]:
    warnings.simplefilter("ignore")
    rows = full_size_rows() if full_size else []
    return rows + tiny_rows()


def tiny_rows() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_tiny_siglip2(tmp / "tiny")
        data_dir = make_synthetic_corpus(tmp / "data", speakers_per_language=24, words_per_recording=10)
        config = TrainingConfig(data_dir=str(data_dir), parser="all", n_mels=32, window_seconds=2.5)
        cache = LogMelCache(tmp / "cache", LogMelParams(n_mels=32))
        processor = AutoProcessor.from_pretrained(model_dir)
        text_length = DementiaClassifier(str(model_dir)).text_max_length

        def collator_for() -> DementiaCollator:
            return DementiaCollator(processor, "multimodal", text_length)

        cold, warm = data_epoch_seconds(config, cache, collator_for)
        datasets, _ = build_datasets(config, cache)
        batch = collator_for()([datasets["train"][i] for i in range(BATCH_SIZE)])
        throughput = training_samples_per_second(model_dir, batch, ("adamw", "sam"))
        adamw, sam = throughput["adamw"], throughput["sam"]
    return [
        {"name": "dementia tiny model: training throughput AdamW", "value": adamw, "unit": "samples/s",
         "note": f"tiny SigLIP2, batch {BATCH_SIZE}, multimodal concat, CPU fp32"},
        {"name": "dementia tiny model: training throughput SAM", "value": sam, "unit": "samples/s",
         "note": "two forward/backward passes per step; median of interleaved steps"},
        {"name": "dementia tiny model: SAM / AdamW throughput", "value": sam / adamw, "unit": "ratio",
         "note": "expected about 0.5"},
        {"name": "dementia: data time epoch 1 (cold log-mel cache)", "value": cold, "unit": "s",
         "note": f"{len(datasets['train'])} train recordings after featurising all 96"},
        {"name": "dementia: data time epoch 2 (warm cache)", "value": warm, "unit": "s",
         "note": "np.load + NaFlex patching + tokenising only"},
        {"name": "dementia: data time epoch 1 / epoch 2", "value": cold / warm, "unit": "ratio",
         "note": "the cache's speed-up of every epoch after the first"},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny_only", action="store_true", help="skip the real-size rows (about 8 GB of RAM)")
    print(json.dumps(run_bench(full_size=not parser.parse_args().tiny_only), indent=2))
