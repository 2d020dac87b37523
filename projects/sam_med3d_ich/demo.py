"""`make demo-med3d`: the README's fine-tuning recipe on generated head CT, with the tiny model on CPU.

`samkit make-data sam_med3d_ich DIR` writes the same data. The row reports the best validation Dice
after 1 click (the model-selection metric) and, as baseline, the same untrained model's Dice after
1 click on the same volumes with the same simulated clicks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from projects.sam_med3d_ich.config import TrainConfig
from projects.sam_med3d_ich.dataloader import VolumeDataset, read_cases
from projects.sam_med3d_ich.inference import interactive_refinement
from projects.sam_med3d_ich.model import build_ich_model
from projects.sam_med3d_ich.synthetic import write_dataset
from projects.sam_med3d_ich.train import main as train_main
from projects.sam_med3d_ich.trainer import step_seed
from projects.sam_med3d_ich.utils import segmentation_metrics

SEED = 0
# the README's command: its flags are the tool's defaults (test_readme_recipe checks the README shows them)
README_RECIPE = ["--epochs", "200", "--batch_size", "2", "--lr", "3e-3", "--prompt_decoder_lr_scale", "1",
                 "--num_clicks", "2", "--ce_weight", "0", "--target_spacing", "1.5", "1.5", "1.5"]
TINY_MODEL = ["--model_type", "tiny", "--visual_tokens", "16", "--visual_token_dim", "32"]


def make_data(out_dir: Path, seed: int = 0) -> Path:
    """24 patients of 32^3 synthetic CT at 1.5 mm: volumes/*.pkl, masks/*.nii, train/val/test.csv."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_dataset(out_dir, n_patients=24, shape=(32, 32, 32), seed=seed, spacing=(1.5, 1.5, 1.5))


def recipe_argv(data_dir: Path, output_dir: Path, epochs: int, *extra: str) -> list[str]:
    """The README's command on `data_dir` with the tiny model, for `epochs` epochs."""
    recipe = list(README_RECIPE)
    recipe[recipe.index("--epochs") + 1] = str(epochs)
    return ["--train_csv", str(data_dir / "train.csv"), "--val_csv", str(data_dir / "val.csv"),
            "--mask_dir", str(data_dir / "masks"), "--output_dir", str(output_dir), *recipe, *TINY_MODEL,
            "--seed", str(SEED), *extra]


def untrained_val_dice_1click(data_dir: Path) -> float:
    """Dice after 1 click of the untrained tiny model on the ICH-positive validation volumes, with the
    clicks validation draws (seeded per case index)."""
    torch.manual_seed(SEED)
    model = build_ich_model("tiny", 16, 32).eval()
    cfg = TrainConfig()
    dataset = VolumeDataset(read_cases(data_dir / "val.csv", data_dir / "masks"), cfg.intensity_norm, cfg.hu_window,
                            cfg.target_spacing)
    scores = []
    for index in range(len(dataset)):
        item = dataset[index]
        if not item["ich"]:
            continue
        truth = item["label"][0] > 0.5
        rounds = interactive_refinement(model, item["image"][None], truth, 1,
                                        torch.Generator().manual_seed(step_seed(SEED, index)), overlap=0.25)
        scores.append(segmentation_metrics(rounds[1].logits[0, 0] > 0, truth, item["spacing"])["dice"])
    return float(np.mean(scores))


def run_demo(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    data_dir = make_data(out_dir / "data", seed=SEED)
    summary = train_main(recipe_argv(data_dir, out_dir / "run", 12, "--num_workers", "1", "--log_images",
                                     "--log_freq", "6"))
    return {"dataset": "synthetic head CT", "metric": "val_dice_1click", "value": float(summary["best_val_dice"]),
            "baseline": untrained_val_dice_1click(data_dir), "output_dir": summary["output_dir"]}


if __name__ == "__main__":
    print(run_demo(Path("runs/demo/sam_med3d_ich")))
