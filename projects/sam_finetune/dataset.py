"""Prompted segmentation samples for SAM fine-tuning, and `--visualize` to look at them.

One item is one image with up to `max_instances_per_image` instance masks and a prompt per
instance (box, points or both), all in SAM's square input frame. A batch holds several images;
the model encodes them together and decodes each image's prompts separately.

    python dataset.py --data_dir data/segmentation --dataset_type directory --split train --visualize
    python dataset.py --data_dir data/coco --dataset_type coco --split train --visualize
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from projects.sam_finetune.augment import Augmenter, changes_pixels
from projects.sam_finetune.config import DataConfig
from projects.sam_finetune.data_sources import (
    DataError,
    SampleIndex,
    index_coco,
    index_directory,
    load_instance_masks,
)
from projects.sam_finetune.preprocess import map_intensity, normalize_and_pad, read_image, resize_to_input
from projects.sam_finetune.prompts import box_from_mask, jitter_box, sample_points
from projects.sam_finetune.transforms import pad_to_square, resize_mask

log = logging.getLogger(__name__)


class PromptedSegmentationDataset(Dataset):
    """Items: dict(image (3, S, S) float, masks (N, S, S) float {0,1}, boxes (N, 4) | None,
    point_coords (N, P, 2) | None, point_labels (N, P) | None, index, image_path, original_size,
    input_size (h, w) before padding).

    `train=True` draws prompts, jitter, instance subsets and augmentation from a generator seeded by
    (seed, epoch, index), so an epoch is reproducible whatever the workers; `train=False` uses exact
    boxes, (seed, index)-seeded points and no augmentation, so every evaluation sees the same prompts.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0):
        self.cfg, self.split, self.train, self.seed = cfg, split, train, seed
        # In shared memory: persistent DataLoader workers hold their own copy of the dataset, and a
        # plain attribute set by `set_epoch` in the main process would never reach them.
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        data_dir = Path(cfg.data_dir)
        if cfg.dataset_type == "directory":
            self.index: SampleIndex = index_directory(data_dir, split)
        else:
            self.index = index_coco(data_dir, split, cfg.category_ids)
        self.augment = Augmenter(cfg.augment) if train and changes_pixels(cfg.augment) else None

    @property
    def pixels_fixed(self) -> bool:
        """True when an image's input pixels are the same every epoch (its embedding can be cached)."""
        return self.augment is None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.index.skipped

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.index.records)

    def _rng(self, index: int) -> np.random.Generator:
        key = [self.seed, self.epoch, index] if self.train else [self.seed, index]
        return np.random.default_rng(key)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._load(index)
        except DataError as error:  # skipped by the collate function and counted by the trainer
            log.warning("skipping %s", error)
            return {"error": str(error), "index": index}

    def _load(self, index: int) -> dict[str, Any]:
        cfg, record, rng = self.cfg, self.index.records[index], self._rng(index)
        stored = read_image(record.image_path)
        masks = load_instance_masks(record, self.index, cfg.split_instances)
        if masks.shape[1:] != stored.shape[:2]:
            raise DataError(f"{record.image_path}: image changed on disk since indexing (size mismatch)")

        # to the input frame with preprocess.py's steps: intensity -> uint8 RGB, longest side = S,
        # (augmentation), normalisation and padding to S x S
        size = cfg.image_size
        image = resize_to_input(map_intensity(stored, cfg.intensity), size)
        masks = np.stack([resize_mask(m, image.shape[:2]) for m in masks])
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]  # specks that vanished when shrunk
        if self.augment is not None:
            augmented_image, augmented_masks = self.augment(image, masks, rng)
            if len(augmented_masks):  # otherwise every object left the frame: keep the original
                image, masks = augmented_image, augmented_masks
        if len(masks) == 0:
            raise DataError(f"{record.image_path}: every instance vanished at image_size {size}")
        if len(masks) > cfg.max_instances_per_image:
            keep = np.sort(rng.choice(len(masks), cfg.max_instances_per_image, replace=False)) if self.train \
                else np.arange(cfg.max_instances_per_image)
            masks = masks[keep]
        input_hw = image.shape[:2]
        image_tensor = normalize_and_pad(image, cfg.normalization, size)
        masks = np.stack([pad_to_square(m, size) for m in masks])

        boxes = coords = labels = None
        if cfg.prompt_mode in ("box", "both"):
            jitter = cfg.box_jitter if self.train else 0.0
            boxes = np.stack([jitter_box(box_from_mask(m), jitter, input_hw, rng) for m in masks])
        if cfg.prompt_mode in ("point", "both"):
            points = [sample_points(m, cfg.num_points, cfg.num_negative_points, rng) for m in masks]
            coords = np.stack([c for c, _ in points])
            labels = np.stack([lab for _, lab in points])
        return {
            "image": image_tensor,
            "masks": torch.from_numpy(masks).float(),
            "boxes": None if boxes is None else torch.from_numpy(boxes),
            "point_coords": None if coords is None else torch.from_numpy(coords),
            "point_labels": None if labels is None else torch.from_numpy(labels),
            "index": index,
            "image_path": str(record.image_path),
            "original_size": record.image_hw,
            "input_size": tuple(input_hw),
        }


def collate_prompted(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the images; keep per-image masks and prompts as lists (instance counts differ).

    Samples that failed to load are left out and listed under "errors".
    """
    errors = [item["error"] for item in items if "error" in item]
    items = [item for item in items if "error" not in item]
    if not items:
        return {"images": torch.zeros(0), "errors": errors, "index": torch.zeros(0, dtype=torch.long)}
    batch: dict[str, Any] = {"images": torch.stack([item["image"] for item in items]), "errors": errors}
    for key in ("masks", "boxes", "point_coords", "point_labels", "index", "image_path",
                "original_size", "input_size"):
        batch[key] = [item[key] for item in items]
    batch["index"] = torch.tensor(batch["index"])
    return batch


# --- visualisation ------------------------------------------------------------------------------


def draw_samples(dataset: PromptedSegmentationDataset, num_samples: int, out_path: Path) -> Path:
    """A grid of images with their instance masks, boxes (green) and points (+ red, x blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from projects.sam_finetune.transforms import denormalize_image

    count = min(num_samples, len(dataset))
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, index in zip(axes[0], range(count)):
        item = dataset._load(index)
        h, w = item["input_size"]
        picture = denormalize_image(item["image"], dataset.cfg.normalization).astype(np.float32)
        for i, mask in enumerate(item["masks"].numpy().astype(bool)):
            picture[mask] = 0.5 * picture[mask] + 0.5 * 255 * np.array(colours(i % 10)[:3])
        ax.imshow(picture[:h, :w].astype(np.uint8))
        if item["boxes"] is not None:
            for x0, y0, x1, y1 in item["boxes"].tolist():
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        if item["point_coords"] is not None:
            coords, labels = item["point_coords"].reshape(-1, 2), item["point_labels"].reshape(-1)
            ax.scatter(*coords[labels == 1].T, c="red", marker="+", s=60)
            ax.scatter(*coords[labels == 0].T, c="blue", marker="x", s=40)
        ax.set_title(f"{Path(item['image_path']).name}: {len(item['masks'])} instance(s)", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Inspect a SAM fine-tuning dataset.")
    parser.add_argument("--data_dir", required=True, help="dataset root")
    parser.add_argument("--dataset_type", choices=["directory", "coco"], default="directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_size", type=int, default=1024, help="SAM input size (longest side)")
    parser.add_argument("--prompt_mode", choices=["box", "point", "both"], default="both")
    parser.add_argument("--num_points", type=int, default=1)
    parser.add_argument("--split_instances", action="store_true", help="directory masks: one instance per component")
    parser.add_argument("--visualize", action="store_true", help="draw samples into --output")
    parser.add_argument("--num_samples", type=int, default=4, help="images drawn by --visualize")
    parser.add_argument("--output", default="dataset_sample.png", help="where --visualize writes")
    return parser.parse_args(argv)


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    return DataConfig(data_dir=args.data_dir, dataset_type=args.dataset_type, image_size=args.image_size,
                      prompt_mode=args.prompt_mode, num_points=args.num_points,
                      split_instances=args.split_instances)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    cfg = data_config_from_args(args)
    try:
        dataset = PromptedSegmentationDataset(cfg, args.split, train=False)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    instances = sum(len(dataset[i].get("masks", [])) for i in range(min(len(dataset), 64)))
    print(f"{args.dataset_type} split {args.split!r}: {len(dataset)} images, "
          f"{instances} instances in the first {min(len(dataset), 64)}, {len(dataset.skipped)} skipped "
          f"{dataset.index.skipped_counts or ''}")
    if args.visualize:
        print(f"wrote {draw_samples(dataset, args.num_samples, Path(args.output))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
