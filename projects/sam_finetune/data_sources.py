"""Finding samples on disk and reading their instance masks: the directory and COCO layouts.

Directory layout:  <data_dir>/images/<split>/<name>.jpg|png  and  <data_dir>/masks/<split>/<name>.png
                   (or .tif/.tiff): 0 background, each other value one object (0/255, 0/1 or a label image of
                   any integer bit depth); optionally split further into connected components.
COCO layout:       <data_dir>/annotations/instances_<split>.json  and  <data_dir>/<split>/<file_name>
                   (polygons or RLE; one instance per annotation; crowd annotations skipped).

Every sample is checked when the index is built; a bad one is skipped, counted by reason and
reported with its file, never replaced by zeros.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from projects.sam_finetune.coco import decode_segmentation, read_coco
from projects.sam_finetune.errors import DataError
from projects.sam_finetune.preprocess import TIFF_SUFFIXES, read_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass
class SampleRecord:
    image_path: Path
    mask_path: Path | None = None  # directory layout
    annotations: list[dict[str, Any]] = field(default_factory=list)  # COCO layout
    image_hw: tuple[int, int] = (0, 0)


@dataclass
class SampleIndex:
    records: list[SampleRecord]
    skipped: list[tuple[str, str]]  # (file, reason)

    @property
    def skipped_counts(self) -> dict[str, int]:
        # "mask size 64x48 does not match ..." and "... 32x32 ..." are one kind of problem
        return dict(Counter(re.sub(r"\d+", "N", reason.split(" (")[0]) for _, reason in self.skipped))


def read_label_mask(path: Path) -> np.ndarray:
    """HxW integer mask as stored (any integer bit depth; palette PNGs keep their indices).

    0 is background; every other value is one object id (a binary 0/255 or 0/1 mask has one).
    DataError naming the file for a missing, unreadable, colour or non-integer mask.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing mask")
    if path.suffix.lower() == ".png":
        with contextlib.suppress(Exception), Image.open(path) as picture:
            if picture.mode == "P":  # indexed colour: the indices are the labels
                return np.asarray(picture)
    try:
        mask = read_image(path)
    except DataError:
        raise DataError(f"{path}: unreadable mask") from None
    if mask.ndim == 3:
        if not all((mask[..., c] == mask[..., 0]).all() for c in range(1, min(mask.shape[2], 3))):
            raise DataError(f"{path}: colour mask (expected one channel of object ids)")
        mask = mask[..., 0]
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
        raise DataError(f"{path}: {mask.dtype} mask (expected integer object ids)")
    return mask


def mask_instances(mask: np.ndarray, split_components: bool) -> np.ndarray:
    """HxW label mask -> (N, H, W) uint8 {0, 1}: one instance per object id (ascending), each further
    split into 8-connected components when `split_components`."""
    instances = [(mask == value).astype(np.uint8) for value in np.unique(mask) if value != 0]
    if split_components:
        instances = [component for instance in instances for component in split_connected_components(instance)]
    return np.stack(instances) if instances else np.zeros((0, *mask.shape), np.uint8)


def split_connected_components(mask: np.ndarray) -> np.ndarray:
    """HxW {0,1} -> (N, H, W) one mask per 8-connected component."""
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    return np.stack([(labels == i).astype(np.uint8) for i in range(1, count)]) if count > 1 \
        else np.zeros((0, *mask.shape), np.uint8)


def _image_hw(path: Path) -> tuple[int, int]:
    if path.suffix.lower() in TIFF_SUFFIXES:  # 16-bit / float / multi-channel TIFFs: PIL reads few of them
        return read_image(path).shape[:2]
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # PIL raises many types for broken files
        raise DataError(f"{path}: unreadable image ({type(error).__name__})") from None
    return height, width


def index_directory(data_dir: Path, split: str) -> SampleIndex:
    image_dir, mask_dir = data_dir / "images" / split, data_dir / "masks" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder of split {split!r} not found")
    records, skipped = [], []
    for image_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        mask_path = next((path for suffix in MASK_SUFFIXES if (path := mask_dir / f"{image_path.stem}{suffix}").is_file()),
                         mask_dir / f"{image_path.stem}.png")
        try:
            height, width = _image_hw(image_path)
            mask = read_label_mask(mask_path)
            if mask.shape != (height, width):
                raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match "
                                f"image size {width}x{height}")
            if not mask.any():
                raise DataError(f"{mask_path}: empty mask (no prompt possible)")
        except DataError as error:
            skipped.append(_file_and_reason(error))
            continue
        records.append(SampleRecord(image_path=image_path, mask_path=mask_path, image_hw=(height, width)))
    return _finish(records, skipped, image_dir)


def index_coco(data_dir: Path, split: str, category_ids: list[int]) -> SampleIndex:
    """Images with at least one usable annotation; malformed, crowd and unknown-id annotations skipped
    and counted with their annotation id (coco.read_coco). Masks are decoded when a sample loads."""
    annotation_file = data_dir / "annotations" / f"instances_{split}.json"
    if not annotation_file.is_file():
        raise DataError(f"{annotation_file}: COCO annotation file of split {split!r} not found")
    coco = read_coco(annotation_file, category_ids)
    records, skipped = [], list(coco.skipped)
    for image_id in sorted(coco.annotations):
        info = coco.images[image_id]
        image_path = data_dir / split / info["file_name"]
        try:
            height, width = _image_hw(image_path)
            if (height, width) != (info["height"], info["width"]):
                raise DataError(f"{image_path}: image size {width}x{height} does not match the annotation "
                                f"file's {info['width']}x{info['height']}")
        except DataError as error:
            skipped.append(_file_and_reason(error))
            continue
        records.append(SampleRecord(image_path=image_path, annotations=coco.annotations[image_id],
                                    image_hw=(height, width)))
    return _finish(records, skipped, annotation_file)


def _file_and_reason(error: DataError) -> tuple[str, str]:
    """DataError messages read "<file>: <problem>"."""
    file, reason = str(error).split(": ", 1)
    return file, reason


def _finish(records: list[SampleRecord], skipped: list[tuple[str, str]], where: Path) -> SampleIndex:
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if not records:
        raise DataError(f"{where}: no usable samples ({len(skipped)} skipped)")
    return SampleIndex(records=records, skipped=skipped)


def load_instance_masks(record: SampleRecord, index: SampleIndex, split_instances: bool) -> np.ndarray:
    """(N, H, W) uint8 {0, 1} instance masks of one sample, in the image's original frame."""
    if record.mask_path is not None:
        return mask_instances(read_label_mask(record.mask_path), split_instances)
    height, width = record.image_hw
    masks = []
    for ann in record.annotations:
        try:
            masks.append(decode_segmentation(ann["segmentation"], height, width))
        except Exception as error:  # pycocotools raises several types for a bad compressed RLE
            raise DataError(f"{record.image_path}: annotation {ann.get('id')} does not decode "
                            f"({type(error).__name__})") from None
    masks = [mask for mask in masks if mask.any()]  # an empty polygon gives no prompt
    if not masks:
        raise DataError(f"{record.image_path}: every annotation decodes to an empty mask")
    return np.stack(masks)
