"""Evaluate a fine-tuned SAM against the base checkpoint zero-shot, on the same images and prompts.

    python evaluate.py --config config.yaml --checkpoint outputs/.../best_model.pth

Writes per_image_metrics.csv (one row per image: IoU, Dice, pixel accuracy, boundary F1 of both
models, each the mean over the image's instances) and evaluation_summary.json (means), and prints
the two models side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from projects.sam_finetune.config import ConfigError, load_config
from projects.sam_finetune.data_sources import DataError
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import evaluate, mean_metrics
from projects.sam_finetune.metrics import METRIC_NAMES
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.modeling.loading import load_sam
from projects.sam_finetune.modeling.prompted_sam import PromptedSam
from projects.sam_finetune.preprocess import Preprocessing
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors
from shared.distributed import make_dataloader
from shared.run import RunError
from shared.seeding import seed_everything


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a fine-tuned SAM against its base checkpoint.")
    parser.add_argument("--config", required=True, help="the training config (data, prompts, base checkpoint)")
    parser.add_argument("--checkpoint", required=True, help="best_model.pth, a resume checkpoint or a stock state dict")
    parser.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    parser.add_argument("--base_checkpoint", default=None,
                        help="zero-shot baseline (default: model.checkpoint of the config)")
    parser.add_argument("--no_base", action="store_true", help="skip the base-model comparison")
    parser.add_argument("--output_dir", default=None, help="default: <checkpoint folder>/evaluation")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    split = args.split or cfg.data.val_split
    out_dir = Path(args.output_dir) if args.output_dir else Path(args.checkpoint).resolve().parent / "evaluation"

    finetuned = load_sam(args.checkpoint, cfg.model.type, cfg.data.image_size, cfg.data.normalization)
    if finetuned.image_size != cfg.data.image_size:
        raise ConfigError(f"{args.checkpoint}: model input size {finetuned.image_size} but data.image_size "
                          f"is {cfg.data.image_size}")
    wanted = Preprocessing.from_config(cfg)
    if finetuned.preprocessing_from and finetuned.preprocessing != wanted:
        raise ConfigError(f"{finetuned.preprocessing_from}: the model was trained with preprocessing "
                          f"{finetuned.preprocessing} but {args.config} sets {wanted}; evaluate with its own")
    models = {"finetuned": finetuned.sam}
    if not args.no_base:
        seed_everything(cfg.training.seed)  # a random-init base (no checkpoint) is the one training started from
        models["base"] = build_sam(cfg.model.type, args.base_checkpoint or cfg.model.checkpoint,
                                   image_size=cfg.data.image_size).eval()

    dataset = PromptedSegmentationDataset(cfg.data, split, train=False, seed=cfg.training.seed)
    loader = make_dataloader(dataset, cfg.data.batch_size, shuffle=False, seed=cfg.training.seed,
                             num_workers=cfg.data.num_workers, collate_fn=collate_prompted)
    amp = AmpPolicy.create(device, enabled=cfg.device.use_amp)
    table, summary = None, {"checkpoint": str(args.checkpoint), "split": split, "images": len(dataset),
                            "skipped": len(dataset.skipped), "strategy": finetuned.strategy}
    for name, sam in models.items():
        rows, _, _ = evaluate(PromptedSam(sam).to(device), loader, None, device, amp,
                              normalization=cfg.data.normalization)
        summary[name] = mean_metrics(rows)
        frame = pd.DataFrame(rows).rename(columns={m: f"{name}_{m}" for m in METRIC_NAMES})
        table = frame if table is None else table.merge(frame, on=["image_path", "instances"])

    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "per_image_metrics.csv", index=False)
    (out_dir / "evaluation_summary.json").write_text(json.dumps(summary, indent=2))
    side_by_side = pd.DataFrame({name: summary[name] for name in models}).T
    print(f"{split}: {len(dataset)} images ({len(dataset.skipped)} skipped)\n{side_by_side.to_string(float_format='%.4f')}")
    print(f"wrote {out_dir / 'per_image_metrics.csv'}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (ConfigError, DataError, CheckpointError, RunError))


if __name__ == "__main__":
    sys.exit(cli())
