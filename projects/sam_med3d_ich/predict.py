"""Segment a head CT: a volume (+ optional clicks) -> a NIfTI mask on the input's grid, with its
affine and orientation. Volumes larger than the model's crop are covered by sliding windows.

    python projects/sam_med3d_ich/predict.py --checkpoint outputs/ich/best_model.pth --input 049.nii \
        --output 049_ich.nii.gz [--click 210 180 14 1 --click 200 150 12 0]
    python projects/sam_med3d_ich/predict.py --checkpoint sam_med3d_turbo.pth --input 049.nii \
        --output 049_turbo.nii.gz --click 210 180 14 1        # the published model, zero-shot

Clicks are voxel indices (x y z) of the input array and a label: 1 = haemorrhage, 0 = background.
Without clicks the prediction is the automatic one; with clicks it is SAM-Med3D's interactive one
(an empty mask prompt, and only the windows holding a click are segmented).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from projects.sam_med3d_ich.clicks import clicks_to_map
from projects.sam_med3d_ich.dataloader import DataError, load_volume, preprocessing
from projects.sam_med3d_ich.inference import (
    load_model_for_inference,
    predict_volume,
    probability_on_input_grid,
    same_grid,
)
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors


def map_clicks(clicks: list[tuple[int, int, int, int]], source_affine: np.ndarray, target_affine: np.ndarray,
               target_shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Voxel indices in the input grid -> voxel indices in the resampled grid (through world mm)."""
    mapped = []
    to_target = np.linalg.inv(target_affine) @ source_affine
    for x, y, z, label in clicks:
        index = (to_target @ np.array([x, y, z, 1.0]))[:3].round().astype(int)
        index = np.clip(index, 0, np.asarray(target_shape) - 1)
        mapped.append((*map(int, index), label))
    return mapped


def predict_file(checkpoint: str | Path, input_path: str | Path, output_path: str | Path,
                 clicks: list[tuple[int, int, int, int]] | None = None, overlap: float = 0.5,
                 threshold: float = 0.5, device: str = "cpu", amp: bool = False) -> dict[str, Any]:
    model, settings = load_model_for_inference(checkpoint, device)
    prep = settings["preprocessing"]
    image, affine = load_volume(input_path)
    if affine is None:
        print(f"warning: {input_path} stores no voxel geometry; writing a 1 mm identity affine", file=sys.stderr)
        affine = np.eye(4)
    shape = image.shape
    clicks = clicks or []
    for x, y, z, _ in clicks:
        if not all(0 <= c < s for c, s in zip((x, y, z), shape)):
            raise DataError(f"{input_path}: click ({x}, {y}, {z}) lies outside the volume of shape {shape}")

    meta = {"image": MetaTensor(torch.from_numpy(image)[None], affine=torch.as_tensor(affine)),
            "label": MetaTensor(torch.zeros(1, *shape), affine=torch.as_tensor(affine))}
    spacing = tuple(prep["target_spacing"]) if prep["target_spacing"] else None
    hu_window = tuple(prep["hu_window"]) if prep["hu_window"] else None
    processed = Compose(preprocessing(prep["intensity_norm"], hu_window, spacing))(meta)["image"]
    model_affine = np.asarray(processed.affine, dtype=np.float64)
    click_map = None
    if clicks:
        click_map = clicks_to_map(map_clicks(clicks, affine, model_affine, processed.shape[1:]), processed.shape[1:])
        click_map = click_map.to(device)
    elif not settings["ich_head_trained"]:
        print(f"warning: {checkpoint} is a published SAM-Med3D model: it segments around clicks (--click); "
              "without one this is a prompt-free prediction it was not trained for", file=sys.stderr)

    policy = AmpPolicy.create(device, enabled=amp)
    volume = processed.as_tensor()[None].to(device)
    interactive = {} if click_map is None else {"prior_logits": torch.zeros_like(volume), "keep_unclicked": True}
    prediction = predict_volume(model, volume, click_map=click_map, overlap=overlap, amp=policy, **interactive)
    probability = torch.sigmoid(prediction.logits[0].cpu())  # [1, X', Y', Z']
    if not same_grid(model_affine, processed.shape[1:], affine, shape):  # back onto the input's grid
        probability = probability_on_input_grid(probability, model_affine, affine, shape)
    mask = (probability[0].numpy() > threshold).astype(np.uint8)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask, affine), str(output_path))
    voxel_ml = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0))) / 1000.0
    result = {"output": str(output_path), "voxels": int(mask.sum()), "volume_ml": float(mask.sum()) * voxel_ml,
              # the classifier sees every window only without clicks (with clicks only clicked windows are encoded)
              "ich_probability": prediction.ich_probability if settings["ich_head_trained"] and not clicks else math.nan,
              "clicks": len(clicks)}
    ich = (f"{result['ich_probability']:.3f}" if math.isfinite(result["ich_probability"])
           else "n/a (published model)" if not settings["ich_head_trained"] else "n/a with clicks (run without --click)")
    print(f"{input_path} -> {output_path}: {result['voxels']} voxels ({result['volume_ml']:.2f} mL), "
          f"ICH probability {ich}")
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="best_model.pth of a run, or a published SAM-Med3D / SAM-Med3D-turbo .pth as released")
    p.add_argument("--input", required=True, help="volume in HU: .nii / .nii.gz / .pkl / .npy")
    p.add_argument("--output", required=True, help="mask to write (.nii or .nii.gz)")
    p.add_argument("--click", type=int, nargs=4, action="append", default=[], metavar=("X", "Y", "Z", "LABEL"),
                   help="a click at voxel X Y Z, LABEL 1 = haemorrhage, 0 = background; repeatable")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability above which a voxel is haemorrhage")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--use_mixed_precision", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.overlap < 1:
        p.error(f"--overlap must be in [0, 1), got {args.overlap}")
    return predict_file(args.checkpoint, args.input, args.output, [tuple(c) for c in args.click], args.overlap,
                        args.threshold, args.device, args.use_mixed_precision)


def cli(argv: Sequence[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (DataError, CheckpointError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
