"""`make bench` rows for sam_finetune.

1. Epoch time of a frozen-encoder run with the embedding cache vs without (ratio), on a SAM whose
   encoder outweighs its decoder as in the real models (width 192, depth 6, 256 px; built from the
   stock classes), timing the second epoch of each so the cache is warm.
2. Trainable parameters of full / adapter / LoRA on vit_b (built on the meta device: exact counts,
   no memory), and AdamW state bytes measured after one real step on the tiny SAM, with the
   adapter / LoRA state as a fraction of full fine-tuning's.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from projects.sam_finetune.config import DataConfig, FinetuneConfig, config_from_dict
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import EmbeddingCache, batch_loss
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.build import MODEL_REGISTRY, build_sam_tiny
from projects.sam_finetune.modeling.prompted_sam import PromptedSam
from projects.sam_finetune.modeling.strategies import apply_strategy, count_parameters
from projects.sam_finetune.synthetic import make_directory_dataset
from shared.amp import AmpPolicy
from shared.distributed import make_dataloader
from shared.memory import cpu_threads
from shared.optim import build_optimizer
from shared.sam import OptimizationStep

BENCH_IMAGE_SIZE = 256


def encoder_heavy_sam(image_size: int = BENCH_IMAGE_SIZE) -> Sam:
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(img_size=image_size, patch_size=16, embed_dim=192, depth=6, num_heads=6,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      global_attn_indexes=(2, 5), window_size=8, out_chans=32),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(transformer_dim=32, iou_head_hidden_dim=32,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2)),
    )


def _epoch_seconds(model: PromptedSam, loader, cache: EmbeddingCache | None) -> float:
    optimizer = build_optimizer("adamw", model, 1e-3, 0.01)
    stepper = OptimizationStep(model, optimizer, AmpPolicy.create("cpu", enabled=False))
    loss_fn = SamFinetuneLoss(FinetuneConfig().loss)
    timings = []
    for _epoch in range(2):
        start = time.perf_counter()
        for batch in loader:
            stepper.step(lambda b: batch_loss(model, b, loss_fn, torch.device("cpu"), cache), [batch])
        timings.append(time.perf_counter() - start)
    return timings[-1]


def cache_rows() -> list[dict]:
    with TemporaryDirectory() as tmp:
        data_dir = make_directory_dataset(Path(tmp), {"train": 8}, image_size=BENCH_IMAGE_SIZE)
        dataset = PromptedSegmentationDataset(DataConfig(data_dir=str(data_dir), image_size=BENCH_IMAGE_SIZE),
                                              "train", train=True)
        loader = make_dataloader(dataset, 4, shuffle=False, seed=0, collate_fn=collate_prompted)
        seconds = {}
        for name, cache in (("without", None), ("with", EmbeddingCache())):
            torch.manual_seed(0)
            sam = encoder_heavy_sam()
            sam.image_encoder.requires_grad_(False)
            sam.prompt_encoder.requires_grad_(False)
            seconds[name] = _epoch_seconds(PromptedSam(sam), loader, cache)
    return [
        {"name": "embedding_cache_epoch_speedup", "value": seconds["without"] / seconds["with"], "unit": "x",
         "note": f"frozen encoder, epoch 2, 8 images at {BENCH_IMAGE_SIZE}px: {seconds['without']:.2f}s without "
                 f"vs {seconds['with']:.2f}s with the cache"},
    ]


def _strategy_config(strategy: str, model_type: str) -> FinetuneConfig:
    return config_from_dict({"model": {"type": model_type}, "data": {"image_size": 64 if model_type == "tiny" else 1024},
                             "finetuning": {"strategy": strategy}})


def strategy_rows() -> list[dict]:
    rows, state_bytes, tiny_trainable, vit_b_trainable = [], {}, {}, {}
    for strategy in ("full", "adapter", "lora"):
        with torch.device("meta"):
            vit_b = MODEL_REGISTRY["vit_b"]()
        cfg = _strategy_config(strategy, "vit_b")
        cfg.model.freeze_image_encoder = strategy != "full"
        trainable, total = count_parameters(apply_strategy(vit_b, cfg).sam)
        rows.append({"name": f"vit_b_{strategy}_trainable_parameters", "value": float(trainable), "unit": "params",
                     "note": f"{100 * trainable / total:.2f}% of {total:,} parameters"
                             + (" (encoder unfrozen)" if strategy == "full" else "")})
        vit_b_trainable[strategy] = trainable

        cfg = _strategy_config(strategy, "tiny")
        cfg.model.freeze_image_encoder = strategy != "full"
        torch.manual_seed(0)
        model = PromptedSam(apply_strategy(build_sam_tiny(), cfg).sam)
        tiny_trainable[strategy] = count_parameters(model)[0]
        optimizer = build_optimizer("adamw", model, 1e-3, 0.01)
        model(*_one_prompt())[0][0].sum().backward()
        optimizer.step()
        state_bytes[strategy] = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                    for t in s.values() if torch.is_tensor(t))
    for strategy, value in state_bytes.items():
        rows.append({"name": f"tiny_{strategy}_adamw_state_bytes", "value": float(value), "unit": "bytes",
                     "note": f"{value / state_bytes['full']:.3f} of full fine-tuning's optimizer state"})
    for strategy, value in state_bytes.items():  # measured bytes per trainable parameter x vit_b's count
        megabytes = vit_b_trainable[strategy] * value / tiny_trainable[strategy] / 2**20
        rows.append({"name": f"vit_b_{strategy}_adamw_state_mb", "value": megabytes, "unit": "MiB",
                     "note": f"{value / tiny_trainable[strategy]:.1f} bytes per trainable parameter (measured on tiny)"
                             f" x vit_b's trainable count"})
    return rows


def _one_prompt():
    from projects.sam_finetune.modeling.prompted_sam import ImagePrompts

    return [ImagePrompts(boxes=torch.tensor([[8.0, 8.0, 40.0, 40.0]]))], torch.randn(1, 3, 64, 64)


def run_bench() -> list[dict]:
    with cpu_threads(1):
        return cache_rows() + strategy_rows()


if __name__ == "__main__":
    for row in run_bench():
        print(f"{row['name']:45s} {row['value']:>14,.3f} {row['unit']:7s} {row['note']}")
