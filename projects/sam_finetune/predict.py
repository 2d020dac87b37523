"""Segment images with a (fine-tuned) SAM from box / point prompts.

    python predict.py --checkpoint .../best_model.pth --image x.jpg --box 10 20 200 220 --out mask.png
    python predict.py --checkpoint .../best_model.pth --image x.jpg --point 50 60 --point 80 90 --out mask.png
    python predict.py --checkpoint .../best_model.pth --image folder/ --prompts prompts.json --output_dir preds/

Prompts in original-image pixels. `--prompts` is either a JSON file
{"<image file name>": {"boxes": [[x0, y0, x1, y1], ...], "points": [[x, y], ...], "point_labels": [1, ...]}}
(points are one shared prompt per box, or one prompt when there are no boxes) or a COCO annotation file
(one box prompt per annotation's bbox, with training's rules: crowd annotations and categories outside
the checkpoint's `data.category_ids` (or --category_ids) are left out, malformed ones skipped and counted).
Writes the union of the predicted masks as a 0/255 PNG, one PNG per prompt (<name>_<i>.png) and an
overlay (<name>_overlay.png), by default under <run folder>/predictions/ (the checkpoint's folder when it
holds a config.json) or ./predictions/, never inside the data.
Images go through preprocess.py with the checkpoint's preprocessing (its config, or the
preprocessing.json beside a bare state dict); segment-anything's SamPredictor does the prompting.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from segment_anything import SamPredictor

from projects.sam_finetune.coco import decode_segmentation, read_coco
from projects.sam_finetune.data_sources import IMAGE_EXTENSIONS, DataError
from projects.sam_finetune.modeling.build import MODEL_REGISTRY
from projects.sam_finetune.modeling.loading import load_sam
from projects.sam_finetune.preprocess import Preprocessing, map_intensity, preprocess_image, read_image
from projects.sam_finetune.prompts import box_from_mask
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors
from shared.run import RunError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Predict masks with a fine-tuned SAM.")
    parser.add_argument("--checkpoint", required=True, help="best_model.pth or a stock SAM state dict")
    parser.add_argument("--model_type", choices=list(MODEL_REGISTRY), default=None,
                        help="needed only for a bare state dict")
    parser.add_argument("--normalization", choices=["sam", "zero_one"], default="sam",
                        help="input scaling for a bare state dict without preprocessing.json beside it "
                             "(our checkpoints carry theirs)")
    parser.add_argument("--category_ids", type=int, nargs="*", default=None,
                        help="COCO prompts: categories to prompt (default: the checkpoint's data.category_ids)")
    parser.add_argument("--image", required=True, help="an image file or a folder of images")
    parser.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                        help="a box prompt (repeat for several objects)")
    parser.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"),
                        help="a point prompt (repeat; all points form one prompt)")
    parser.add_argument("--point_label", type=int, action="append", choices=[0, 1],
                        help="label of each --point (1 object, 0 background; default 1)")
    parser.add_argument("--prompts", default=None, help="JSON or COCO file with prompts per image file name")
    parser.add_argument("--out", default=None, help="mask PNG for a single image (default: <output_dir>/<image>_mask.png)")
    parser.add_argument("--output_dir", default=None,
                        help="where masks go (default: <checkpoint's run folder>/predictions or ./predictions)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser.parse_args(argv)


def prompts_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    points = args.point or []
    labels = args.point_label or [1] * len(points)
    if len(labels) != len(points):
        raise ValueError(f"--point_label given {len(labels)} times for {len(points)} --point prompts")
    return {"boxes": args.box or [], "points": points, "point_labels": labels}


def coco_prompts(path: Path, category_ids: list[int]) -> dict[str, dict[str, Any]]:
    """One box prompt per usable annotation, by file name, selected exactly as training selects them
    (coco.read_coco: crowd, malformed and unknown-id annotations skipped and counted)."""
    coco = read_coco(path, category_ids)
    if coco.skipped:
        reasons = Counter(reason.split(" (")[0] for _, reason in coco.skipped)
        print(f"{path}: skipped {len(coco.skipped)} annotations {dict(reasons)}", file=sys.stderr)
    prompts: dict[str, dict[str, Any]] = {}
    for image_id, image_annotations in coco.annotations.items():
        image = coco.images[image_id]
        boxes = []
        for ann in image_annotations:
            bbox = ann.get("bbox")
            if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox) \
                    and min(bbox[2:]) > 0:
                x, y, w, h = bbox
                boxes.append([x, y, x + w, y + h])
            else:  # no usable bbox: the box of its mask, as training draws it
                mask = decode_segmentation(ann["segmentation"], image["height"], image["width"])
                if mask.any():
                    boxes.append(box_from_mask(mask).tolist())
        prompts[image["file_name"]] = {"boxes": boxes, "points": [], "point_labels": []}
    return prompts


def prompts_from_file(path: Path, category_ids: list[int]) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON prompt file ({error})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO
        return coco_prompts(path, category_ids)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping image file names to prompts")
    return data


def set_image(predictor: SamPredictor, image: np.ndarray, preprocessing: Preprocessing) -> None:
    """`SamPredictor.set_image` through preprocess.py: `image` as stored, any bit depth."""
    tensor, original_size, input_size = preprocess_image(image, preprocessing)
    predictor.reset_image()
    with torch.no_grad():
        predictor.features = predictor.model.image_encoder(tensor[None].to(predictor.device))
    predictor.original_size, predictor.input_size, predictor.is_image_set = original_size, input_size, True


def predict_image(predictor: SamPredictor, image: np.ndarray, prompts: dict[str, Any],
                  preprocessing: Preprocessing) -> np.ndarray:
    """`image` as stored -> (K, H, W) bool masks, one per box (or one for a points-only prompt)."""
    set_image(predictor, image, preprocessing)
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
    """`image`: the HxWx3 uint8 picture (map_intensity's) for the overlay."""
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
                   device: torch.device) -> tuple[SamPredictor, Preprocessing, list[int] | None]:
    """SamPredictor on the loaded model, its preprocessing, and the COCO categories it trained on."""
    loaded = load_sam(checkpoint, model_type, None, normalization)
    return SamPredictor(loaded.sam.to(device)), loaded.preprocessing, loaded.category_ids


def default_output_dir(checkpoint: Path) -> Path:
    """<run folder>/predictions for a checkpoint inside a run folder, else ./predictions."""
    run_dir = checkpoint.resolve().parent
    return run_dir / "predictions" if (run_dir / "config.json").is_file() else Path.cwd() / "predictions"


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    source = Path(args.image)
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    elif source.is_file():
        images = [source]
    else:
        raise DataError(f"{source}: no such image or folder")
    predictor, preprocessing, trained_categories = make_predictor(args.checkpoint, args.model_type,
                                                                  args.normalization, device)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(Path(args.checkpoint))
    category_ids = args.category_ids if args.category_ids is not None else (trained_categories or [])
    file_prompts = prompts_from_file(Path(args.prompts), category_ids) if args.prompts else {}
    cli_prompts = prompts_from_cli(args)
    written: list[Path] = []
    for path in images:
        prompts = file_prompts.get(path.name, cli_prompts) if args.prompts else cli_prompts
        if not (prompts.get("boxes") or prompts.get("points")):
            print(f"skipping {path}: no prompt for it", file=sys.stderr)
            continue
        image = read_image(path)
        masks = predict_image(predictor, image, prompts, preprocessing)
        if args.out and len(images) == 1:
            mask_path = Path(args.out)
        else:
            mask_path = out_dir / f"{path.stem}_mask.png"
        written += write_outputs(map_intensity(image, preprocessing.intensity), masks, mask_path)
        print(f"{path}: {len(masks)} mask(s), {int(masks.any(0).sum())} pixels -> {mask_path}")
    return written


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (DataError, CheckpointError, ValueError, RunError))


if __name__ == "__main__":
    sys.exit(cli())
