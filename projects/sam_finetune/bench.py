"""`make bench` rows for sam_finetune, measured at real size on the CPU (random weights, generated data).

1. Embedding cache: epoch time of a frozen-encoder run on Meta's vit_b architecture at 1024 px, 2
   images, without the cache vs with it (its second epoch, when every embedding is cached).
2. Trainable parameters and AdamW state bytes of full / adapter / LoRA, measured on vit_b itself: the
   optimizer's state tensors after one `optimizer.step()` in which every trainable weight has a
   gradient (a zero one: the state's size does not depend on the values, so no 1024 px backward is run).
3. Gradient checkpointing: one full fine-tuning step of vit_b at 1024 px (batch 1, one box) with and
   without `model.gradient_checkpointing`: peak RSS during the step (VmHWM, reset before it; weights and
   AdamW state already allocated) and the step time.
4. COCO indexing: seconds to index a generated file of 100,000 annotations (1,000 small images).

Run alone (needs ~10 GB): `flock /tmp/bigmem.lock .venv/bin/python -m projects.sam_finetune.bench`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import cv2
import numpy as np
import torch

from projects.sam_finetune.config import DataConfig, FinetuneConfig, config_from_dict
from projects.sam_finetune.data_sources import index_coco
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import EmbeddingCache, batch_loss
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.build import MODEL_REGISTRY
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam, upscale_logits
from projects.sam_finetune.modeling.strategies import apply_strategy, count_parameters
from projects.sam_finetune.synthetic import make_directory_dataset
from shared.amp import AmpPolicy
from shared.distributed import make_dataloader
from shared.memory import MemoryMonitor, cpu_threads, free_memory
from shared.optim import build_optimizer
from shared.sam import OptimizationStep

IMAGE_SIZE = 1024  # vit_b's input size
CACHE_IMAGES = 2
COCO_IMAGES, COCO_ANNOTATIONS_PER_IMAGE = 1_000, 100
THREADS = 2


def _vit_b_config(strategy: str, checkpointing: bool = False) -> FinetuneConfig:
    return config_from_dict({"model": {"type": "vit_b", "freeze_image_encoder": strategy != "full",
                                       "gradient_checkpointing": checkpointing},
                             "data": {"image_size": IMAGE_SIZE}, "finetuning": {"strategy": strategy}})


def _epoch_seconds(model: PromptedSam, loader, cache: EmbeddingCache | None, epochs: int) -> float:
    """Seconds of the last of `epochs` epochs."""
    optimizer = build_optimizer("adamw", model, 1e-4, 0.01)
    stepper = OptimizationStep(model, optimizer, AmpPolicy.create("cpu", enabled=False))
    loss_fn = SamFinetuneLoss(FinetuneConfig().loss)
    seconds = 0.0
    for _epoch in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            stepper.step(lambda b: batch_loss(model, b, loss_fn, torch.device("cpu"), cache), [batch])
        seconds = time.perf_counter() - start
    return seconds


def cache_rows() -> list[dict]:
    with TemporaryDirectory() as tmp:
        data_dir = make_directory_dataset(Path(tmp), {"train": CACHE_IMAGES}, image_size=IMAGE_SIZE)
        dataset = PromptedSegmentationDataset(DataConfig(data_dir=str(data_dir), image_size=IMAGE_SIZE),
                                              "train", train=True)
        loader = make_dataloader(dataset, 1, shuffle=False, seed=0, collate_fn=collate_prompted)
        torch.manual_seed(0)
        model = PromptedSam(apply_strategy(MODEL_REGISTRY["vit_b"](), _vit_b_config("full")).sam)
        # the cached run's first epoch fills the cache (and warms the process up); its second is timed,
        # then one epoch without the cache on the same model
        cached = _epoch_seconds(model, loader, EmbeddingCache(), epochs=2)
        uncached = _epoch_seconds(model, loader, None, epochs=1)
    del model
    free_memory()
    return [{"name": "embedding_cache_epoch_speedup_vit_b_1024", "value": uncached / cached, "unit": "x",
             "note": f"vit_b (random weights), frozen encoder, {CACHE_IMAGES} images at {IMAGE_SIZE}px, batch 1, "
                     f"{THREADS} threads: an epoch takes {uncached:.2f}s without the cache vs {cached:.3f}s with "
                     f"every embedding cached"}]


def strategy_rows() -> list[dict]:
    rows, state_bytes = [], {}
    for strategy in ("full", "adapter", "lora"):
        torch.manual_seed(0)
        finetuned = apply_strategy(MODEL_REGISTRY["vit_b"](), _vit_b_config(strategy))
        trainable, total = count_parameters(finetuned.sam)
        optimizer = build_optimizer("adamw", finetuned.sam, 1e-4, 0.01)
        for parameter in finetuned.sam.parameters():
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        state_bytes[strategy] = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                                    for t in state.values() if torch.is_tensor(t))
        rows.append({"name": f"vit_b_{strategy}_trainable_parameters", "value": float(trainable), "unit": "params",
                     "note": f"{100 * trainable / total:.2f}% of {total:,} parameters"
                             + (" (encoder unfrozen)" if strategy == "full" else "")})
        del finetuned, optimizer
        free_memory()
    for strategy, value in state_bytes.items():
        rows.append({"name": f"vit_b_{strategy}_adamw_state_mb", "value": value / 2**20, "unit": "MiB",
                     "note": f"measured on vit_b after one AdamW step; {value / state_bytes['full']:.4f} of full "
                             f"fine-tuning's state"})
    return rows


def _one_step(model: PromptedSam, optimizer: torch.optim.Optimizer, image: torch.Tensor,
              prompts: list[ImagePrompts]) -> None:
    optimizer.zero_grad(set_to_none=True)
    outputs = model(prompts, images=image)
    logits = upscale_logits(outputs[0][0], IMAGE_SIZE)
    (logits.sigmoid().mean() + outputs[0][1].sum()).backward()
    optimizer.step()


def checkpointing_rows() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    prompts = [ImagePrompts(boxes=torch.tensor([[200.0, 300.0, 700.0, 800.0]]))]
    results = {}
    for checkpointing in (True, False):
        torch.manual_seed(0)
        model = PromptedSam(apply_strategy(MODEL_REGISTRY["vit_b"](), _vit_b_config("full", checkpointing)).sam)
        model.train()
        optimizer = build_optimizer("adamw", model, 1e-4, 0.01)
        for parameter in model.parameters():  # AdamW's state exists before the measured step, as in training
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        free_memory()
        monitor = MemoryMonitor("cpu")
        before = monitor.current()["rss_mb"]
        monitor.reset_peak()
        start = time.perf_counter()
        _one_step(model, optimizer, image, prompts)
        seconds = time.perf_counter() - start
        results[checkpointing] = {"peak": monitor.peak()["peak_rss_mb"], "before": before, "seconds": seconds}
        del model, optimizer
        free_memory()
    on, off = results[True], results[False]
    what = f"one full fine-tuning step of vit_b (random weights) at {IMAGE_SIZE}px, batch 1, {THREADS} threads"
    return [
        {"name": "vit_b_1024_step_peak_rss_cut_by_checkpointing", "value": off["peak"] / on["peak"], "unit": "x",
         "note": f"{what}: peak RSS {off['peak'] / 1024:.2f} GiB without vs {on['peak'] / 1024:.2f} GiB with "
                 f"gradient checkpointing (weights + AdamW state before the step: {off['before'] / 1024:.2f} GiB)"},
        {"name": "vit_b_1024_step_time_cost_of_checkpointing", "value": on["seconds"] / off["seconds"], "unit": "x",
         "note": f"{what}: {on['seconds']:.1f}s with vs {off['seconds']:.1f}s without (recomputed forward)"},
    ]


def _write_coco(root: Path) -> int:
    """1,000 32x48 images with 100 annotations each: polygons and RLE alternating, and their files."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    images, annotations = [], []
    rle = {"size": [32, 48], "counts": [100, 20, 1416]}
    for image_id in range(1, COCO_IMAGES + 1):
        name = f"{image_id:05d}.png"
        cv2.imwrite(str(root / "train" / name), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "height": 32, "width": 48})
        for k in range(COCO_ANNOTATIONS_PER_IMAGE):
            x, y = float(k % 40), float(k % 24)
            segmentation = [[x, y, x + 8, y, x + 8, y + 8, x, y + 8]] if k % 2 else rle
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": segmentation, "bbox": [x, y, 8, 8], "area": 64.0, "iscrowd": 0})
    (root / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}))
    return len(annotations)


def coco_rows() -> list[dict]:
    with TemporaryDirectory() as tmp:
        count = _write_coco(Path(tmp))
        start = time.perf_counter()
        index = index_coco(Path(tmp), "train", [])
        seconds = time.perf_counter() - start
    assert sum(len(r.annotations) for r in index.records) == count
    return [{"name": "coco_index_100k_annotations_seconds", "value": seconds, "unit": "s",
             "note": f"{count:,} annotations on {COCO_IMAGES:,} 48x32 images (JSON read, every annotation checked, "
                     f"every image's size read); masks are decoded only when a sample loads"}]


def run_bench(echo=None) -> list[dict]:
    """Every row; `echo(row)` is called as each group of rows is measured."""
    rows = []
    with cpu_threads(THREADS):
        for measure in (coco_rows, strategy_rows, cache_rows, checkpointing_rows):
            for row in measure():
                rows.append(row)
                if echo is not None:
                    echo(row)
    return rows


if __name__ == "__main__":
    run_bench(lambda row: print(f"{row['name']:58s} {row['value']:>14,.3f} {row['unit']:7s} {row['note']}",
                                flush=True))
