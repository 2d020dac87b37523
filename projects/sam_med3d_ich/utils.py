"""Dataset statistics, segmentation metrics (MONAI) and image/truth/prediction overlays."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_iou
from monai.metrics.meandice import compute_dice

from projects.sam_med3d_ich.dataloader import Case, DataError, load_case

# ------------------------------------------------------------------------------------ statistics


def scan_cases(cases: list[Case], split: str) -> tuple[list[Case], dict[str, Any]]:
    """Load every case once: keep the readable ones, count and name the bad ones, and gather the
    statistics (cases, positives, voxel spacing, lesion volume in mL). A case whose `ich` label
    disagrees with its mask (ICH+ with an empty mask, ICH- with a lesion) is kept, warned about and
    counted: the CSV or the mask is wrong, and only the user knows which."""
    good, bad, spacings, lesion_ml, shapes, unknown_spacing = [], [], [], [], [], 0
    disagreements: list[dict[str, str]] = []
    for case in cases:
        try:
            data = load_case(case)
        except DataError as error:
            bad.append({"case_id": case.case_id, "reason": str(error)})
            continue
        good.append(case)
        spacings.append(data.spacing)
        shapes.append(data.image.shape)
        unknown_spacing += not data.spacing_known
        has_lesion = bool(data.label.any())
        if bool(case.ich) != has_lesion:
            problem = "ich=1 but its mask is empty" if case.ich else "ich=0 but its mask marks a lesion"
            where = case.mask_path if case.mask_path is not None else case.volume_path
            warnings.warn(f"{where}: {problem} ({case.case_id}, {split})", stacklevel=2)
            disagreements.append({"case_id": case.case_id, "problem": problem})
        if case.ich:
            lesion_ml.append(float(data.label.sum()) * float(np.prod(data.spacing)) / 1000.0)
    stats: dict[str, Any] = {
        "split": split, "cases": len(good), "positives": sum(c.ich for c in good),
        "negatives": sum(1 - c.ich for c in good), "patients": len({c.patient_id for c in good}),
        "bad_cases": len(bad), "bad_case_reasons": bad, "spacing_unknown_assumed_1mm": unknown_spacing,
        "ich_mask_disagreements": len(disagreements), "ich_mask_disagreement_cases": disagreements,
    }
    if spacings:
        s = np.asarray(spacings)
        stats["spacing_mm"] = {"min": s.min(0).tolist(), "mean": s.mean(0).tolist(), "max": s.max(0).tolist()}
        shape = np.asarray(shapes)
        stats["shape"] = {"min": shape.min(0).tolist(), "max": shape.max(0).tolist()}
    if lesion_ml:
        ml = np.asarray(lesion_ml)
        stats["lesion_volume_ml"] = {"mean": float(ml.mean()), "median": float(np.median(ml)),
                                     "min": float(ml.min()), "max": float(ml.max())}
    return good, stats


def format_statistics(stats: dict[str, Any]) -> str:
    line = (f"[{stats['split']}] {stats['cases']} cases ({stats['positives']} ICH+, {stats['negatives']} ICH-) "
            f"from {stats['patients']} patients; {stats['bad_cases']} bad cases skipped")
    if "spacing_mm" in stats:
        line += "; spacing mean " + "x".join(f"{v:.2f}" for v in stats["spacing_mm"]["mean"]) + " mm"
    if "lesion_volume_ml" in stats:
        ml = stats["lesion_volume_ml"]
        line += f"; lesion volume median {ml['median']:.2f} mL (range {ml['min']:.2f}-{ml['max']:.2f})"
    for bad in stats["bad_case_reasons"]:
        line += f"\n  skipped {bad['case_id']}: {bad['reason']}"
    return line


# ------------------------------------------------------------------------------------------ metrics


def segmentation_metrics(pred: torch.Tensor, truth: torch.Tensor, spacing: tuple[float, float, float]
                         ) -> dict[str, float]:
    """pred, truth: bool [X, Y, Z]. Dice/IoU are 1 when both are empty; HD95 (mm) is NaN when either is."""
    p, t = pred[None, None].float(), truth[None, None].float()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    pred_ml, true_ml = float(p.sum()) * voxel_ml, float(t.sum()) * voxel_ml
    hd95 = math.nan
    if p.any() and t.any():
        hd95 = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                                spacing=list(spacing)).item())
    return {"dice": float(compute_dice(p, t, include_background=True, ignore_empty=False).item()),
            "iou": float(compute_iou(p, t, include_background=True, ignore_empty=False).item()),
            "hd95_mm": hd95, "pred_volume_ml": pred_ml, "true_volume_ml": true_ml,
            "volume_error_ml": pred_ml - true_ml}


def nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


# ------------------------------------------------------------------------------------------ overlays


def overlay_panel(image: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """The axial slice with the most haemorrhage (or the middle one) as image | truth | prediction,
    H x 3W x 3 uint8; truth in green, prediction in red over the grey image."""
    image, truth, pred = image.float().cpu(), truth.bool().cpu(), pred.bool().cpu()
    area = truth.sum(dim=(0, 1))
    z = int(area.argmax()) if area.max() > 0 else image.shape[2] // 2
    grey = image[:, :, z]
    grey = ((grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-6) * 255).to(torch.uint8).numpy()
    base = np.repeat(grey[..., None], 3, axis=2)

    def tint(mask: torch.Tensor, colour: tuple[int, int, int]) -> np.ndarray:
        out = base.copy()
        m = mask[:, :, z].numpy()
        out[m] = (0.5 * out[m] + 0.5 * np.asarray(colour)).astype(np.uint8)
        return out

    return np.concatenate([base, tint(truth, (0, 255, 0)), tint(pred, (255, 0, 0))], axis=1)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image)
    return path
