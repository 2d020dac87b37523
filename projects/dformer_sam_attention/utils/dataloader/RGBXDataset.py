"""NYU Depth v2 / SUN RGB-D folders: RGB/<name>.jpg, Depth/<name>.png (8-bit), Label/<name>.png
(`labels/` for SUN RGB-D: `config.label_folder`), and split lists train.txt / test.txt whose lines start with `RGB/<name>.jpg`.

Every sample is checked when the dataset is built: a list naming a missing file, an RGB image
without its depth map, RGB/depth/label of different sizes, a depth map that is not 8-bit, or label
values ≥ the number of classes (other than the ignore value 255), or a truncated file (OpenCV would
fill the missing part grey without an error; PIL's full decode detects it) raise `DatasetError` naming the
file and the problem. With `skip_bad_samples=True` such samples are left out instead, each with a
warning, and counted in `self.skipped` (the training summary reports them). Nothing is resized or
zero-filled to make a bad sample fit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from projects.dformer_sam_attention.local_configs.config import SegConfig
from projects.dformer_sam_attention.utils.dataloader.transforms import (
    IGNORE_INDEX,
    random_scale_flip_crop,
    to_tensors,
)


class DatasetError(ValueError):
    """A problem with one file of the dataset; the message names the file."""


def check_complete(path: Path) -> None:
    """Decode `path` fully with PIL, which raises on a truncated JPEG/PNG (OpenCV only warns and
    fills the missing rows grey)."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path}: damaged or truncated image ({str(error).splitlines()[0]})") from None


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: unreadable RGB image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: Path) -> np.ndarray:
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DatasetError(f"{path}: unreadable depth map")
    if depth.dtype != np.uint8:
        raise DatasetError(f"{path}: depth must be an 8-bit PNG, found {depth.dtype}")
    return depth if depth.ndim == 2 else depth[..., 0]


def read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{path}: unreadable label map")
    if label.ndim != 2:
        raise DatasetError(f"{path}: label must be a single-channel PNG, found shape {label.shape}")
    return label


def hold_out(entries: list[str], fraction: float, seed: int) -> list[str]:
    """The entries of the validation split: round(fraction·n) of them (at least 1), chosen by seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    count = min(max(1, round(fraction * len(entries))), len(entries) - 1)
    order = np.random.default_rng(seed).permutation(len(entries))
    return [entries[i] for i in sorted(order[:count])]


def transform_label(label: np.ndarray, gt_transform: bool) -> np.ndarray:
    """gt_transform: 0 (unlabelled) → 255, k → k − 1, as upstream. The label's dtype is kept (a 16-bit
    value such as 300 must stay out of range and be reported, not wrap around to a valid class)."""
    if not gt_transform:
        return label
    return np.where(label == 0, IGNORE_INDEX, label.astype(np.int64) - 1).astype(label.dtype)


class RGBXDataset(Dataset):
    """split "train" (augmented crops), "val" (held-out images of train.txt) or "test" (test.txt),
    the last two as whole images. Items: dict(rgb, depth, label, name).

    `val_fraction` > 0 holds out that share of train.txt's images (a seeded choice, by image) as the
    validation split that chooses checkpoints, so the test split is never used for that.
    """

    def __init__(self, config: SegConfig, split: str, root: str | Path | None = None,
                 skip_bad_samples: bool = False, seed: int = 0, val_fraction: float = 0.0):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        if split == "val" and val_fraction <= 0:
            raise ValueError("the val split is a held-out part of train.txt: it needs val_fraction > 0")
        self.config = config
        self.root = Path(root or config.dataset_path)
        self.train = split == "train"
        self.seed = seed
        self.epoch = 0
        list_file = self.root / ("test.txt" if split == "test" else "train.txt")
        if not list_file.is_file():
            raise DatasetError(f"{list_file}: split list does not exist")
        entries = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not entries:
            raise DatasetError(f"{list_file}: split list is empty")
        if split != "test" and val_fraction > 0:
            held_out = set(hold_out(entries, val_fraction, seed))
            entries = [e for e in entries if (e in held_out) == (split == "val")]
        self.samples: list[tuple[str, Path, Path, Path]] = []
        self.skipped: list[dict[str, str]] = []
        for entry in entries:
            try:
                self.samples.append(self._check_sample(list_file, entry))
            except DatasetError as error:
                if not skip_bad_samples:
                    raise
                warnings.warn(f"skipping sample: {error}", stacklevel=2)
                self.skipped.append({"sample": entry, "reason": str(error)})
        if not self.samples:
            raise DatasetError(f"{list_file}: no usable samples in the {split} split ({len(self.skipped)} skipped)")

    def _check_sample(self, list_file: Path, entry: str) -> tuple[str, Path, Path, Path]:
        rgb_path = self.root / entry
        name = Path(entry).stem
        depth_path = self.root / "Depth" / f"{name}.png"
        label_path = self.root / self.config.label_folder / f"{name}.png"
        if not rgb_path.is_file():
            raise DatasetError(f"{rgb_path}: listed in {list_file.name} but does not exist")
        if not depth_path.is_file():
            raise DatasetError(f"{depth_path}: missing depth map for {rgb_path.name}")
        if not label_path.is_file():
            raise DatasetError(f"{label_path}: missing label for {rgb_path.name}")
        for path in (rgb_path, depth_path, label_path):
            check_complete(path)
        rgb, depth, label = read_rgb(rgb_path), read_depth(depth_path), read_label(label_path)
        if depth.shape != rgb.shape[:2]:
            raise DatasetError(f"{depth_path}: depth is {depth.shape[1]}×{depth.shape[0]} but "
                               f"{rgb_path.name} is {rgb.shape[1]}×{rgb.shape[0]}")
        if label.shape != rgb.shape[:2]:
            raise DatasetError(f"{label_path}: label is {label.shape[1]}×{label.shape[0]} but "
                               f"{rgb_path.name} is {rgb.shape[1]}×{rgb.shape[0]}")
        values = np.unique(transform_label(label, self.config.gt_transform))
        bad = [int(v) for v in values if v >= self.config.num_classes and v != IGNORE_INDEX]
        if bad:
            raise DatasetError(f"{label_path}: label values {bad[:5]} are ≥ {self.config.num_classes} classes "
                               f"(gt_transform={self.config.gt_transform})")
        return name, rgb_path, depth_path, label_path

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of (epoch, index) is a pure function of the seed: resumed runs replay it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        name, rgb_path, depth_path, label_path = self.samples[index]
        rgb, depth = read_rgb(rgb_path), read_depth(depth_path)
        label = transform_label(read_label(label_path), self.config.gt_transform)
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            rgb, depth, label = random_scale_flip_crop(
                rgb, depth, label, self.config.train_scale_array,
                (self.config.image_height, self.config.image_width), rng)
        c = self.config
        item = to_tensors(rgb, depth, label, c.norm_mean, c.norm_std, c.depth_mean, c.depth_std, c.channel_order)
        item["name"] = name
        return item
