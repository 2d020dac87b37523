"""`make demo-med3d`: synthetic head CT, the tiny model, a few epochs through train.py on CPU.

The row reports the best validation Dice (automatic segmentation of whole ICH-positive volumes) and,
as baseline, the better of an empty-mask prediction (Dice 0 on every ICH-positive case) and the
same model before training. The synthetic bleeds cover <1% of a crop; with cross-entropy in the loss
the tiny model first predicts all background and needs far more CPU steps to leave that plateau, so
the demo trains with the Dice term only (--ce_weight 0).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from projects.sam_med3d_ich.dataloader import VolumeDataset, read_cases
from projects.sam_med3d_ich.inference import predict_volume
from projects.sam_med3d_ich.model import build_ich_model
from projects.sam_med3d_ich.synthetic import write_dataset
from projects.sam_med3d_ich.train import main as train_main
from projects.sam_med3d_ich.utils import segmentation_metrics

SEED = 0
MODEL_FLAGS = ["--model_type", "tiny", "--visual_tokens", "16", "--visual_token_dim", "32"]


def make_data(out_dir: Path, seed: int = 0) -> Path:
    """24 patients of 32^3 synthetic CT: volumes/*.pkl, masks/*.nii, train/val/test.csv."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_dataset(out_dir, n_patients=24, shape=(32, 32, 32), seed=seed)


def untrained_val_dice(data_dir: Path) -> float:
    torch.manual_seed(SEED)
    model = build_ich_model("tiny", 16, 32).eval()
    dataset = VolumeDataset([c for c in read_cases(data_dir / "val.csv", data_dir / "masks") if c.ich],
                            "brain_window", (0.0, 80.0), None)
    scores = []
    for item in dataset:
        logits = predict_volume(model, item["image"][None]).logits[0, 0]
        scores.append(segmentation_metrics(logits > 0, item["label"][0] > 0.5, item["spacing"])["dice"])
    return float(np.mean(scores))


def run_demo(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    data_dir = make_data(out_dir / "data", seed=SEED)
    summary = train_main([
        "--train_csv", str(data_dir / "train.csv"), "--val_csv", str(data_dir / "val.csv"),
        "--mask_dir", str(data_dir / "masks"), "--output_dir", str(out_dir / "run"), *MODEL_FLAGS,
        "--epochs", "14", "--batch_size", "2", "--lr", "3e-3", "--prompt_decoder_lr_scale", "1",
        "--num_clicks", "2", "--ce_weight", "0", "--augmentation_prob", "0", "--pos_ratio", "0.9", "--scheduler_type", "cosine",
        "--patience", "30", "--num_workers", "1", "--seed", str(SEED), "--log_images", "--log_freq", "7",
    ])
    baseline = max(0.0, untrained_val_dice(data_dir))  # 0.0 is the empty-mask Dice on ICH-positive cases
    return {"dataset": "synthetic head CT", "metric": "val_dice", "value": float(summary["best_val_dice"]),
            "baseline": baseline, "output_dir": summary["output_dir"]}


if __name__ == "__main__":
    print(run_demo(Path("runs/demo/sam_med3d_ich")))
