"""Segment images with a (fine-tuned) SAM from box / point prompts.

    python predict.py --checkpoint .../best_model.pth --image x.jpg --box 10 20 200 220 --out mask.png
    python predict.py --checkpoint .../best_model.pth --image x.jpg --point 50 60 --point 80 90 --out mask.png
    python predict.py --checkpoint .../best_model.pth --image folder/ --prompts prompts.json --output_dir preds/

Prompts in original-image pixels. `--prompts` is either a JSON file
{"<image file name>": {"boxes": [[x0, y0, x1, y1], ...], "points": [[x, y], ...], "point_labels": [1, ...]}}
(points are one shared prompt per box, or one prompt when there are no boxes) or a COCO annotation file
(one box prompt per annotation's bbox). Writes the union of the predicted masks as a 0/255 PNG,
one PNG per prompt (<name>_<i>.png) and an overlay (<name>_overlay.png).
Uses segment-anything's SamPredictor on the loaded model (adapters and merged LoRA included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from segment_anything import SamPredictor

from projects.sam_finetune.data_sources import IMAGE_EXTENSIONS, DataError, read_image_rgb
from projects.sam_finetune.modeling.build import MODEL_REGISTRY
from projects.sam_finetune.modeling.loading import load_sam
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Predict masks with a fine-tuned SAM.")
    parser.add_argument("--checkpoint", required=True, help="best_model.pth or a stock SAM state dict")
    parser.add_argument("--model_type", choices=list(MODEL_REGISTRY), default=None,
                        help="needed only for a bare state dict")
    parser.add_argument("--normalization", choices=["sam", "zero_one"], default="sam",
                        help="input scaling for a bare state dict (our checkpoints carry theirs)")
    parser.add_argument("--image", required=True, help="an image file or a folder of images")
    parser.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                        help="a box prompt (repeat for several objects)")
    parser.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"),
                        help="a point prompt (repeat; all points form one prompt)")
    parser.add_argument("--point_label", type=int, action="append", choices=[0, 1],
                        help="label of each --point (1 object, 0 background; default 1)")
    parser.add_argument("--prompts", default=None, help="JSON or COCO file with prompts per image file name")
    parser.add_argument("--out", default=None, help="mask PNG for a single image (default: <image>_mask.png)")
    parser.add_argument("--output_dir", default=None, help="where masks go for a folder (default: <folder>_masks)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser.parse_args(argv)


def prompts_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    points = args.point or []
    labels = args.point_label or [1] * len(points)
    if len(labels) != len(points):
        raise ValueError(f"--point_label given {len(labels)} times for {len(points)} --point prompts")
    return {"boxes": args.box or [], "points": points, "point_labels": labels}


def prompts_from_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON prompt file ({error})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO
        names = {image["id"]: image["file_name"] for image in data["images"]}
        prompts: dict[str, dict[str, Any]] = {}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            entry = prompts.setdefault(names[ann["image_id"]], {"boxes": [], "points": [], "point_labels": []})
            entry["boxes"].append([x, y, x + w, y + h])
        return prompts
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping image file names to prompts")
    return data


def predict_image(predictor: SamPredictor, image: np.ndarray, prompts: dict[str, Any]) -> np.ndarray:
    """-> (K, H, W) bool masks, one per box (or one for a points-only prompt)."""
    predictor.set_image(image)
    boxes = np.asarray(prompts.get("boxes") or [], dtype=np.float32).reshape(-1, 4)
    points = np.asarray(prompts.get("points") or [], dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(prompts.get("point_labels") or [1] * len(points), dtype=np.float32)
    if len(boxes) == 0 and len(points) == 0:
        raise ValueError("no prompt: give --box and/or --point (or --prompts)")
    device = predictor.device
    count = max(len(boxes), 1)
    torch_boxes = torch_points = torch_labels = None
    if len(boxes):
        torch_boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=device), image.shape[:2])
    if len(points):
        coords = predictor.transform.apply_coords_torch(torch.as_tensor(points, device=device), image.shape[:2])
        torch_points = coords.unsqueeze(0).expand(count, -1, -1)
        torch_labels = torch.as_tensor(labels, device=device).unsqueeze(0).expand(count, -1)
    masks, _, _ = predictor.predict_torch(point_coords=torch_points, point_labels=torch_labels,
                                          boxes=torch_boxes, multimask_output=False)
    return masks[:, 0].cpu().numpy()


def write_outputs(image: np.ndarray, masks: np.ndarray, mask_path: Path) -> list[Path]:
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    union = masks.any(0)
    cv2.imwrite(str(mask_path), union.astype(np.uint8) * 255)
    written = [mask_path]
    if len(masks) > 1:
        for i, mask in enumerate(masks):
            path = mask_path.with_name(f"{mask_path.stem}_{i}.png")
            cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
            written.append(path)
    picture = image.astype(np.float32)
    picture[union] = 0.5 * picture[union] + 0.5 * np.array([255, 0, 0])
    overlay_path = mask_path.with_name(f"{mask_path.stem}_overlay.png")
    cv2.imwrite(str(overlay_path), cv2.cvtColor(picture.astype(np.uint8), cv2.COLOR_RGB2BGR))
    return written + [overlay_path]


def make_predictor(checkpoint: str | Path, model_type: str | None, normalization: str,
                   device: torch.device) -> SamPredictor:
    """SamPredictor on the loaded model, normalising inputs as the model was trained."""
    loaded = load_sam(checkpoint, model_type, None, normalization)
    sam = loaded.sam.to(device)
    if loaded.normalization == "zero_one":  # SamPredictor normalises with the model's pixel mean/std
        sam.pixel_mean.zero_()
        sam.pixel_std.fill_(255.0)
    return SamPredictor(sam)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    predictor = make_predictor(args.checkpoint, args.model_type, args.normalization, device)

    source = Path(args.image)
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        out_dir = Path(args.output_dir) if args.output_dir else source.with_name(source.name + "_masks")
    elif source.is_file():
        images, out_dir = [source], None
    else:
        raise DataError(f"{source}: no such image or folder")
    file_prompts = prompts_from_file(Path(args.prompts)) if args.prompts else {}
    cli_prompts = prompts_from_cli(args)
    written: list[Path] = []
    for path in images:
        prompts = file_prompts.get(path.name, cli_prompts) if args.prompts else cli_prompts
        if not (prompts.get("boxes") or prompts.get("points")):
            print(f"skipping {path}: no prompt for it", file=sys.stderr)
            continue
        image = read_image_rgb(path)
        masks = predict_image(predictor, image, prompts)
        if out_dir is None:
            mask_path = Path(args.out) if args.out else path.with_name(f"{path.stem}_mask.png")
        else:
            mask_path = out_dir / f"{path.stem}_mask.png"
        written += write_outputs(image, masks, mask_path)
        print(f"{path}: {len(masks)} mask(s), {int(masks.any(0).sum())} pixels -> {mask_path}")
    return written


def cli() -> int:
    return run_reporting_errors(main, (DataError, CheckpointError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
