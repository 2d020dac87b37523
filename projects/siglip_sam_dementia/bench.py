"""Benchmarks on the tiny model (CPU is fine), ratios against a baseline measured in the same process.

1. Training throughput, SAM vs AdamW: SAM does two forward/backward passes per step, so the ratio
   is expected near 0.5.
2. Data time of epoch 1 (log-mel cache cold: audio decoding + mel filterbank) vs epoch 2 (cache
   warm: one np.load per recording), the cache's whole point.

    python -m projects.siglip_sam_dementia.bench
"""

from __future__ import annotations

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
from projects.siglip_sam_dementia.model import DementiaClassifier
from projects.siglip_sam_dementia.synthetic import make_synthetic_corpus
from projects.siglip_sam_dementia.tiny_model import make_tiny_siglip2
from shared.optim import build_optimizer
from shared.sam import OptimizationStep

BATCH_SIZE = 8
TIMED_STEPS = 15


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


def run_bench() -> list[dict]:
    warnings.simplefilter("ignore")
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
        {"name": "dementia: training throughput AdamW", "value": adamw, "unit": "samples/s",
         "note": f"tiny SigLIP2, batch {BATCH_SIZE}, multimodal concat, CPU fp32"},
        {"name": "dementia: training throughput SAM", "value": sam, "unit": "samples/s",
         "note": "two forward/backward passes per step; median of interleaved steps"},
        {"name": "dementia: SAM / AdamW throughput", "value": sam / adamw, "unit": "ratio",
         "note": "expected about 0.5"},
        {"name": "dementia: data time epoch 1 (cold log-mel cache)", "value": cold, "unit": "s",
         "note": f"{len(datasets['train'])} train recordings after featurising all 96"},
        {"name": "dementia: data time epoch 2 (warm cache)", "value": warm, "unit": "s",
         "note": "np.load + NaFlex patching + tokenising only"},
        {"name": "dementia: data time epoch 1 / epoch 2", "value": cold / warm, "unit": "ratio",
         "note": "the cache's speed-up of every epoch after the first"},
    ]


if __name__ == "__main__":
    print(json.dumps(run_bench(), indent=2))
