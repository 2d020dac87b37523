"""Evaluate a model on a CSV split as SAM-Med3D reports it: Dice after 1 click and after N clicks
(each click drawn from the current error region), next to the automatic (prompt-free) Dice, with
IoU, HD95 and volume error (mL) per case and on average, and the ICH classification AUC. Whole
volumes by sliding windows, never crops around the ground truth.

    # zero-shot baseline: the published weights as released, with SAM-Med3D's pre-processing
    python projects/sam_med3d_ich/evaluate.py --checkpoint sam_med3d_turbo.pth --csv test.csv \\
        --mask_dir masks/ --output_dir eval/turbo
    # a fine-tuned run of this tool, with the pre-processing it was trained with
    python projects/sam_med3d_ich/evaluate.py --checkpoint outputs/ich/best_model.pth --csv test.csv \\
        --mask_dir masks/ --output_dir eval/finetuned [--num_clicks 10]

Metrics are computed on each volume's own voxel grid and orientation against its untouched mask:
predictions made on the reoriented / resampled grid are resampled back first.
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
    load_model_for_inference,
    probability_on_input_grid,
    same_grid,
)
from projects.sam_med3d_ich.trainer import step_seed
from projects.sam_med3d_ich.utils import nanmean, segmentation_metrics
from shared.amp import AmpPolicy
from shared.argtypes import positive_int
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors
from shared.tracking import write_json

METRICS = ("dice", "iou", "hd95_mm", "volume_error_ml", "abs_volume_error_ml")
MODES = ("automatic", "1click", "nclicks")  # round 0, after 1 click, after --num_clicks clicks


def case_metrics(masks: dict[str, torch.Tensor], truth: torch.Tensor, spacing: tuple[float, float, float]
                 ) -> dict[str, float]:
    row = {}
    for mode, mask in masks.items():
        metrics = segmentation_metrics(mask, truth, spacing)
        metrics["abs_volume_error_ml"] = abs(metrics["volume_error_ml"])
        row.update({f"{name}_{mode}": metrics[name] for name in METRICS})
        row.setdefault("true_volume_ml", metrics["true_volume_ml"])
    return row


def evaluate(checkpoint: str | Path, csv: str | Path, mask_dir: str | Path, output_dir: str | Path,
             num_clicks: int = 10, overlap: float = 0.5, seed: int = 0, device: str = "cpu",
             amp: bool = False, sw_batch_size: int = 2) -> dict[str, Any]:
    model, settings = load_model_for_inference(checkpoint, device)
    prep = settings["preprocessing"]
    dataset = VolumeDataset(read_cases(csv, mask_dir), prep["intensity_norm"],
                            tuple(prep["hu_window"]) if prep["hu_window"] else None,
                            tuple(prep["target_spacing"]) if prep["target_spacing"] else None)
    policy = AmpPolicy.create(device, enabled=amp)
    rows, skipped, regridded = [], [], 0
    for index in tqdm(range(len(dataset)), desc="evaluating"):
        item = dataset[index]
        if "reason" in item:
            skipped.append({"case_id": item["case_id"], "reason": item["reason"]})
            print(f"skipped {item['case_id']}: {item['reason']}", file=sys.stderr)
            continue
        image, truth = item["image"][None].to(device), item["label"][0] > 0.5
        generator = torch.Generator().manual_seed(step_seed(seed, index))
        rounds = interactive_refinement(model, image, truth.to(device), num_clicks, generator,
                                        overlap=overlap, amp=policy, sw_batch_size=sw_batch_size)
        chosen = dict(zip(MODES, (rounds[0], rounds[1], rounds[-1])))
        masks = {mode: r.logits[0, 0].cpu() > 0 for mode, r in chosen.items()}
        spacing = item["spacing"]
        original = load_case(dataset.cases[index])
        if not same_grid(item["affine"], truth.shape, original.affine, original.label.shape):
            regridded += 1  # report on the input's own grid, against the untouched ground truth
            masks = {mode: probability_on_input_grid(torch.sigmoid(r.logits[0].cpu()), item["affine"],
                                                     original.affine, original.label.shape)[0] > 0.5
                     for mode, r in chosen.items()}
            truth, spacing = torch.from_numpy(original.label > 0), original.spacing
        ich_probability = rounds[0].ich_probability if settings["ich_head_trained"] else math.nan
        rows.append({"case_id": item["case_id"], "ich": item["ich"], "ich_probability": ich_probability,
                     **case_metrics(masks, truth, spacing), "clicks": num_clicks})
    if not rows:
        raise DataError(f"{csv}: no case could be evaluated ({len(skipped)} bad)")
    table = pd.DataFrame(rows)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "per_case_metrics.csv", index=False)

    positives = table[table["ich"] == 1]
    labels = table["ich"].to_numpy()
    columns = [f"{name}_{mode}" for mode in MODES for name in METRICS]
    auc_defined = settings["ich_head_trained"] and 0 < labels.sum() < len(labels)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint), "source": settings["source"], "preprocessing": prep, "csv": str(csv),
        "cases": len(table), "positives": len(positives), "num_clicks": num_clicks,
        "cases_resampled_to_input_grid": regridded, "skipped_cases": len(skipped), "skipped_case_reasons": skipped,
        "mean_all": {c: nanmean(table[c].tolist()) for c in columns},
        "mean_ich_positive": {c: nanmean(positives[c].tolist()) for c in columns},
        "ich_auc": float(roc_auc_score(labels, table["ich_probability"])) if auc_defined else math.nan,
    }
    if not settings["ich_head_trained"]:
        summary["ich_auc_note"] = "the published checkpoint has no ICH classifier; fine-tune to get one"
    write_json(output_dir / "metrics.json", summary)
    pos = summary["mean_ich_positive"]
    print(f"{settings['source']}: {len(table)} cases ({len(positives)} ICH+); on ICH+ cases Dice 1 click "
          f"{pos['dice_1click']:.3f}, {num_clicks} clicks {pos['dice_nclicks']:.3f}, automatic "
          f"{pos['dice_automatic']:.3f}; HD95 {pos['hd95_mm_nclicks']:.2f} mm, |volume error| "
          f"{pos['abs_volume_error_ml_nclicks']:.2f} mL at {num_clicks} clicks; ICH AUC {summary['ich_auc']:.3f}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="best_model.pth of a run, or a published SAM-Med3D / SAM-Med3D-turbo .pth as released")
    p.add_argument("--csv", required=True, help="CSV with columns path,ich,patient_id")
    p.add_argument("--mask_dir", required=True)
    p.add_argument("--output_dir", required=True, help="per_case_metrics.csv and metrics.json go here")
    p.add_argument("--num_clicks", type=positive_int, default=10,
                   help="N of 'Dice at N clicks' (SAM-Med3D reports 1 and 10); Dice at 1 click is always reported")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1)")
    p.add_argument("--sw_batch_size", type=positive_int, default=2, help="windows encoded together")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated clicks")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--use_mixed_precision", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.overlap < 1:
        p.error(f"--overlap must be in [0, 1), got {args.overlap}")
    return evaluate(args.checkpoint, args.csv, args.mask_dir, args.output_dir, args.num_clicks, args.overlap,
                    args.seed, args.device, args.use_mixed_precision, args.sw_batch_size)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (DataError, CheckpointError))


if __name__ == "__main__":
    sys.exit(cli())
