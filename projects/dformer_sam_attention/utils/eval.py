"""Evaluation on the test split: single-scale or multi-scale + flip, whole-image or sliding-window inference, mIoU,
pixel accuracy and the per-class IoU table.

    python projects/dformer_sam_attention/utils/eval.py --checkpoint runs/x/best_model.pth --mst --sliding
    python projects/dformer_sam_attention/utils/eval.py --checkpoint NYUv2_DFormerv2_Small.pth \
        --config local_configs.NYUDepthv2.DFormerv2_S --mst          # a published checkpoint, as published

Multi-scale follows the official protocol when the config's recipe is official: each scaled size is
rounded up to a multiple of 32 and both resizes use align_corners=True, softmax summed over scales
and flips (official `utils/val_mm.py: evaluate_msf`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from projects.dformer_sam_attention.local_configs.config import SegConfig
from projects.dformer_sam_attention.utils.metrics import SegmentationMetrics, per_class_table
from shared.amp import AmpPolicy


def sliding_window_logits(model: nn.Module, rgb: Tensor, depth: Tensor, num_classes: int,
                          crop_hw: tuple[int, int], stride_rate: float) -> Tensor:
    """Logits (B, K, H, W) averaged over overlapping crop_hw windows (images smaller are padded)."""
    batch, _, height, width = rgb.shape
    crop_h, crop_w = crop_hw
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        rgb, depth = F.pad(rgb, (0, pad_w, 0, pad_h)), F.pad(depth, (0, pad_w, 0, pad_h))
    full_h, full_w = rgb.shape[2:]
    stride_h, stride_w = max(1, int(crop_h * stride_rate)), max(1, int(crop_w * stride_rate))
    rows = max(math.ceil((full_h - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((full_w - crop_w) / stride_w), 0) + 1
    logits = rgb.new_zeros(batch, num_classes, full_h, full_w, dtype=torch.float32)
    counts = rgb.new_zeros(1, 1, full_h, full_w, dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            top, left = min(r * stride_h, full_h - crop_h), min(c * stride_w, full_w - crop_w)
            window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
            logits[window] += model(rgb[window], depth[window]).float()
            counts[window] += 1
    return (logits / counts)[..., :height, :width]


def scaled_size(height: int, width: int, scale: float, official: bool) -> tuple[int, int]:
    """Official: int(scale·side) rounded up to a multiple of 32; else the nearest integer."""
    if official:
        return (math.ceil(int(scale * height) / 32) * 32, math.ceil(int(scale * width) / 32) * 32)
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def predict_probabilities(model: nn.Module, rgb: Tensor, depth: Tensor, num_classes: int,
                          scales: Sequence[float] = (1.0,), flip: bool = False, sliding: bool = False,
                          crop_hw: tuple[int, int] = (480, 640), stride_rate: float = 2 / 3,
                          official: bool = False) -> Tensor:
    """Softmax probabilities (B, K, H, W) summed over scales (and horizontal flips); `official`: sizes
    and resizing of the official multi-scale evaluation."""
    height, width = rgb.shape[2:]
    corners = official  # the official evaluation resizes with align_corners=True
    total = rgb.new_zeros(rgb.shape[0], num_classes, height, width, dtype=torch.float32)
    for scale in scales:
        size = scaled_size(height, width, scale, official)
        resize = size != (height, width)
        rgb_s = F.interpolate(rgb, size=size, mode="bilinear", align_corners=corners) if resize else rgb
        depth_s = F.interpolate(depth, size=size, mode="bilinear", align_corners=corners) if resize else depth
        for flipped in (False, True) if flip else (False,):
            r, d = (rgb_s.flip(-1), depth_s.flip(-1)) if flipped else (rgb_s, depth_s)
            if sliding:
                logits = sliding_window_logits(model, r, d, num_classes, crop_hw, stride_rate)
            else:
                logits = model(r, d).float()
            if flipped:
                logits = logits.flip(-1)
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=corners)
            total += logits.softmax(dim=1)
    return total


@torch.no_grad()
def evaluate(model: nn.Module, loader, config: SegConfig, device: torch.device, mst: bool = False,
             sliding: bool = False, amp: AmpPolicy | None = None, progress: bool = True) -> dict:
    """mIoU / pixel accuracy / per-class IoU over a loader; `mst`: config.eval_scale_array + flip."""
    model.eval()
    amp = amp or AmpPolicy(device.type, None)
    scales = tuple(config.eval_scale_array) if mst else (1.0,)
    flip = config.eval_flip if mst else False
    metrics = SegmentationMetrics(config.num_classes, device)
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        rgb, depth, label = (batch[k].to(device) for k in ("rgb", "depth", "label"))
        with amp.autocast():
            probs = predict_probabilities(model, rgb, depth, config.num_classes, scales, flip, sliding,
                                          tuple(config.eval_crop_size), config.eval_stride_rate,
                                          official=config.official_recipe)
        metrics.update(probs.argmax(dim=1), label)
    return metrics.compute()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a trained DFormerv2 segmentation checkpoint.")
    parser.add_argument("--checkpoint", required=True,
                        help="best_model.pth / latest_model.pth of a run, or a published DFormerv2 checkpoint")
    parser.add_argument("--config", default=None,
                        help="dataset config for a published checkpoint (e.g. local_configs.NYUDepthv2.DFormerv2_S; "
                             "it sets classes, channel order, normalisation and scales); not used with our own runs")
    parser.add_argument("--amp", default=False, action=argparse.BooleanOptionalAction,
                        help="mixed precision, the same autocast as training (bf16, or fp16 on GPUs without bf16)")
    parser.add_argument("--dataset_path", default=None, help="data root (default: the one the run used)")
    parser.add_argument("--mst", default=False, action=argparse.BooleanOptionalAction,
                        help="multi-scale (config eval_scale_array) + flip")
    parser.add_argument("--sliding", default=False, action=argparse.BooleanOptionalAction,
                        help="sliding-window inference with config eval_crop_size")
    parser.add_argument("--output", default=None, help="write the metrics and per-class table (JSON) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from projects.dformer_sam_attention.utils.dataloader.dataloader import get_eval_loader
    from projects.dformer_sam_attention.utils.infer import load_trained_model

    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_trained_model(args.checkpoint, device, config_name=args.config)
    if args.dataset_path:
        config = dataclasses.replace(config, dataset_path=args.dataset_path)
    loader, _ = get_eval_loader(config, "test", skip_bad_samples=False, seed=config.seed)
    amp = AmpPolicy.create(device, args.amp)
    result = evaluate(model, loader, config, device, mst=args.mst, sliding=args.sliding, amp=amp)
    table = per_class_table(result["per_class_iou"], config.class_names)
    print(table.to_string(index=False))
    print(f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}  "
          f"(mst={args.mst}, sliding={args.sliding}, {amp.describe()})")
    result["table"] = table.to_dict(orient="records")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    from projects.dformer_sam_attention.utils.errors import USER_ERRORS
    from shared.cli_errors import run_reporting_errors

    sys.exit(run_reporting_errors(main, USER_ERRORS))
