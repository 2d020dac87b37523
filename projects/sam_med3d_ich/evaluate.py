"""Evaluate a trained model on a CSV split: Dice, IoU, HD95 and volume error (mL) per case and on
average, and the ICH classification AUC. Whole volumes by sliding windows, never crops around the
ground truth. With --num_clicks K, K clicks drawn from the remaining error region refine the result.

    python projects/sam_med3d_ich/evaluate.py --checkpoint outputs/best_model.pth --csv test.csv \
        --mask_dir masks/ --output_dir outputs/eval [--num_clicks 5]

Metrics are computed on each volume's own voxel grid against its untouched mask: a model trained with
--target_spacing predicts on the resampled grid and its probabilities are resampled back first.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from projects.sam_med3d_ich.dataloader import DataError, VolumeDataset, load_case, read_cases
from projects.sam_med3d_ich.inference import (
    interactive_refinement,
    load_trained_model,
    probability_on_input_grid,
)
from projects.sam_med3d_ich.utils import nanmean, segmentation_metrics
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors
from shared.tracking import write_json

METRICS = ("dice", "iou", "hd95_mm", "volume_error_ml", "abs_volume_error_ml")


def evaluate(checkpoint: str | Path, csv: str | Path, mask_dir: str | Path, output_dir: str | Path,
             num_clicks: int = 0, overlap: float = 0.5, seed: int = 0, device: str = "cpu",
             amp: bool = False) -> dict[str, Any]:
    model, settings = load_trained_model(checkpoint, device)
    prep = settings["preprocessing"]
    dataset = VolumeDataset(read_cases(csv, mask_dir), prep["intensity_norm"], tuple(prep["hu_window"]),
                            tuple(prep["target_spacing"]) if prep["target_spacing"] else None)
    resampled = bool(prep["target_spacing"])
    policy = AmpPolicy.create(device, enabled=amp)
    generator = torch.Generator().manual_seed(seed)
    rows, skipped = [], []
    for index in tqdm(range(len(dataset)), desc="evaluating"):
        item = dataset[index]
        if "reason" in item:
            skipped.append({"case_id": item["case_id"], "reason": item["reason"]})
            print(f"skipped {item['case_id']}: {item['reason']}", file=sys.stderr)
            continue
        image, truth = item["image"][None].to(device), item["label"][0] > 0.5
        rounds = interactive_refinement(model, image, truth.to(device), num_clicks, generator,
                                        overlap=overlap, amp=policy)
        masks = [rounds[0].logits[0, 0].cpu() > 0, rounds[-1].logits[0, 0].cpu() > 0]
        spacing = item["spacing"]
        if resampled:  # report on the input's own grid, against the untouched ground truth
            original = load_case(dataset.cases[index])
            masks = [probability_on_input_grid(torch.sigmoid(r.logits[0].cpu()), item["affine"], original.affine,
                                               original.label.shape)[0] > 0.5 for r in (rounds[0], rounds[-1])]
            truth, spacing = torch.from_numpy(original.label > 0), original.spacing
        automatic = segmentation_metrics(masks[0], truth, spacing)
        final = segmentation_metrics(masks[1], truth, spacing)
        rows.append({"case_id": item["case_id"], "ich": item["ich"], "ich_probability": rounds[0].ich_probability,
                     **final, "abs_volume_error_ml": abs(final["volume_error_ml"]), "dice_automatic": automatic["dice"],
                     "clicks": num_clicks})
    if not rows:
        raise DataError(f"{csv}: no case could be evaluated ({len(skipped)} bad)")
    table = pd.DataFrame(rows)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "per_case_metrics.csv", index=False)

    positives = table[table["ich"] == 1]
    labels = table["ich"].to_numpy()
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint), "csv": str(csv), "cases": len(table), "positives": len(positives),
        "num_clicks": num_clicks, "resampled_to_input_grid": resampled, "skipped_cases": len(skipped), "skipped_case_reasons": skipped,
        "mean_all": {m: nanmean(table[m].tolist()) for m in (*METRICS, "dice_automatic")},
        "mean_ich_positive": {m: nanmean(positives[m].tolist()) for m in (*METRICS, "dice_automatic")},
        "ich_auc": float(roc_auc_score(labels, table["ich_probability"])) if 0 < labels.sum() < len(labels)
        else math.nan,
    }
    write_json(output_dir / "metrics.json", summary)
    pos = summary["mean_ich_positive"]
    print(f"{len(table)} cases ({len(positives)} ICH+), {num_clicks} clicks: Dice {pos['dice']:.3f} "
          f"(automatic {pos['dice_automatic']:.3f}), IoU {pos['iou']:.3f}, HD95 {pos['hd95_mm']:.2f} mm, "
          f"|volume error| {pos['abs_volume_error_ml']:.2f} mL on ICH+ cases; AUC {summary['ich_auc']:.3f}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--csv", required=True, help="CSV with columns path,ich,patient_id")
    p.add_argument("--mask_dir", required=True)
    p.add_argument("--output_dir", required=True, help="per_case_metrics.csv and metrics.json go here")
    p.add_argument("--num_clicks", type=int, default=0, help="simulated correction clicks after round 0")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated clicks")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--use_mixed_precision", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.overlap < 1:
        p.error(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.num_clicks < 0:
        p.error(f"--num_clicks must be >= 0, got {args.num_clicks}")
    return evaluate(args.checkpoint, args.csv, args.mask_dir, args.output_dir, args.num_clicks, args.overlap,
                    args.seed, args.device, args.use_mixed_precision)


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main, (DataError, CheckpointError)))
