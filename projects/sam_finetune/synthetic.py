"""Synthetic segmentation data in both on-disk layouts, for tests and the demo.

Each image is a textured background with several target objects (reddish ellipses, the class to
segment) and distractors (bluish rectangles, not in the masks). Images alternate between
landscape and portrait sizes so the resize-longest-side path is exercised.

Directory layout: images/<split>/*.png + masks/<split>/*.png (0/255, all targets of an image).
COCO layout: annotations/instances_<split>.json + <split>/*.png, one annotation per target
(alternately polygon and RLE), distractors as category 2, plus one crowd annotation per split.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

TARGET_CATEGORY, DISTRACTOR_CATEGORY = 1, 2


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-frequency colour noise plus stripes: texture the model must learn to ignore."""
    coarse = rng.uniform(40, 160, size=(max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    period = rng.uniform(4, 10)
    stripes = 20 * np.sin(np.arange(width) * 2 * np.pi / period)[None, :, None]
    image = image + stripes + rng.normal(0, 8, size=(height, width, 3))
    return image


def draw_scene(rng: np.random.Generator, height: int, width: int, num_targets: int,
               num_distractors: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """-> (image HxWx3 uint8, target masks, distractor masks); targets do not overlap."""
    image = _background(rng, height, width)
    occupied = np.zeros((height, width), np.uint8)
    targets: list[np.ndarray] = []
    distractors: list[np.ndarray] = []
    for kind, count in (("target", num_targets), ("distractor", num_distractors)):
        for _ in range(count):
            for _attempt in range(20):
                mask = np.zeros((height, width), np.uint8)
                cx, cy = rng.integers(6, width - 6), rng.integers(6, height - 6)
                a, b = rng.integers(4, max(5, min(height, width) // 5), size=2)
                if kind == "target":
                    cv2.ellipse(mask, (int(cx), int(cy)), (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
                else:
                    cv2.rectangle(mask, (int(cx - a), int(cy - b)), (int(cx + a), int(cy + b)), 1, -1)
                if not (mask & occupied).any():
                    break
            else:
                continue
            occupied |= mask
            colour = (rng.uniform(200, 240), rng.uniform(40, 80), rng.uniform(40, 80)) if kind == "target" \
                else (rng.uniform(40, 80), rng.uniform(60, 100), rng.uniform(200, 240))
            image[mask.astype(bool)] = np.array(colour) + rng.normal(0, 6, size=(int(mask.sum()), 3))
            (targets if kind == "target" else distractors).append(mask)
    return np.clip(image, 0, 255).astype(np.uint8), targets, distractors


def _sizes(i: int, image_size: int) -> tuple[int, int]:
    short = image_size * 3 // 4
    return (short, image_size) if i % 2 == 0 else (image_size, short)


def _write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def make_directory_dataset(root: Path, splits: dict[str, int] | None = None, image_size: int = 64,
                           seed: int = 0) -> Path:
    """images/<split>/img_XXXX.png and masks/<split>/img_XXXX.png (0/255)."""
    root = Path(root)
    for split_number, (split, count) in enumerate((splits or {"train": 16, "val": 8}).items()):
        rng = np.random.default_rng([seed, split_number])
        for i in range(count):
            height, width = _sizes(i, image_size)
            image, targets, _ = draw_scene(rng, height, width, int(rng.integers(1, 4)), int(rng.integers(1, 3)))
            mask = np.clip(np.sum(targets, axis=0), 0, 1).astype(np.uint8) * 255
            _write_rgb(root / "images" / split / f"img_{i:04d}.png", image)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks" / split / f"img_{i:04d}.png"), mask)
    return root


def _polygon(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def make_coco_dataset(root: Path, splits: dict[str, int] | None = None, image_size: int = 64,
                      seed: int = 0) -> Path:
    """annotations/instances_<split>.json + <split>/img_XXXX.png; targets alternate polygon/RLE."""
    root = Path(root)
    for split_number, (split, count) in enumerate((splits or {"train": 16, "val": 8}).items()):
        rng = np.random.default_rng([seed, 100 + split_number])
        images, annotations = [], []
        for i in range(count):
            height, width = _sizes(i, image_size)
            image, targets, distractors = draw_scene(rng, height, width, int(rng.integers(1, 4)),
                                                     int(rng.integers(1, 3)))
            name = f"img_{i:04d}.png"
            _write_rgb(root / split / name, image)
            images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
            for category, masks in ((TARGET_CATEGORY, targets), (DISTRACTOR_CATEGORY, distractors)):
                for mask in masks:
                    use_rle = len(annotations) % 2 == 1
                    x, y, w, h = cv2.boundingRect(mask)
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                        "segmentation": _rle(mask) if use_rle else _polygon(mask),
                        "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": 0,
                    })
        # a crowd region, which training must skip
        annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": TARGET_CATEGORY,
                            "segmentation": _rle(np.pad(np.ones((4, 4), np.uint8),
                                                        ((0, images[0]["height"] - 4), (0, images[0]["width"] - 4)))),
                            "area": 16.0, "bbox": [0, 0, 4, 4], "iscrowd": 1})
        payload = {"images": images, "annotations": annotations,
                   "categories": [{"id": TARGET_CATEGORY, "name": "target"},
                                  {"id": DISTRACTOR_CATEGORY, "name": "distractor"}]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(payload))
    return root
