"""Finding samples on disk and reading their instance masks: the directory and COCO layouts.

Directory layout:  <data_dir>/images/<split>/<name>.jpg|png  and  <data_dir>/masks/<split>/<name>.png
                   (binary masks, 0/255 or 0/1; optionally split into instances by connected components).
COCO layout:       <data_dir>/annotations/instances_<split>.json  and  <data_dir>/<split>/<file_name>
                   (polygons or RLE; one instance per annotation; crowd annotations skipped).

Every sample is checked when the index is built; a bad one is skipped, counted by reason and
reported with its file, never replaced by zeros.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from projects.sam_finetune.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


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


def read_image_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB as stored (EXIF orientation ignored), or DataError naming the file.

    OpenCV would otherwise rotate EXIF-tagged JPEGs while the mask PNG and the size check at
    indexing (PIL) see the stored pixel grid: a square photo would pair a rotated image with an
    unrotated mask without any error.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DataError(f"{path}: unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_binary_mask(path: Path) -> np.ndarray:
    """HxW uint8 {0, 1} from a 0/255 or 0/1 PNG, or DataError naming the file and the values."""
    if not path.is_file():
        raise DataError(f"{path}: missing mask")
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)  # as stored, like the image
    if mask is None:
        raise DataError(f"{path}: unreadable mask")
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    if set(values.tolist()) <= {0, 1}:
        return mask.astype(np.uint8)
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataError(f"{path}: non-binary mask (values {shown}; expected 0/255 or 0/1)")


def split_connected_components(mask: np.ndarray) -> np.ndarray:
    """HxW {0,1} -> (N, H, W) one mask per 8-connected component."""
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    return np.stack([(labels == i).astype(np.uint8) for i in range(1, count)]) if count > 1 \
        else np.zeros((0, *mask.shape), np.uint8)


def _image_hw(path: Path) -> tuple[int, int]:
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
        mask_path = mask_dir / f"{image_path.stem}.png"
        try:
            height, width = _image_hw(image_path)
            mask = read_binary_mask(mask_path)
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
    from pycocotools.coco import COCO

    annotation_file = data_dir / "annotations" / f"instances_{split}.json"
    if not annotation_file.is_file():
        raise DataError(f"{annotation_file}: COCO annotation file of split {split!r} not found")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco = COCO(str(annotation_file))
        except Exception as error:
            raise DataError(f"{annotation_file}: not a COCO annotation file ({error})") from None
    unknown = sorted(set(category_ids) - set(coco.getCatIds()))
    if unknown:
        raise DataError(f"{annotation_file}: category ids {unknown} not in the file "
                        f"(has {sorted(coco.getCatIds())})")
    records, skipped = [], []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        image_path = data_dir / split / info["file_name"]
        annotations = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=category_ids or [], iscrowd=None)):
            if ann.get("iscrowd", 0):
                skipped.append((f"{annotation_file} (annotation {ann['id']})", "crowd annotation"))
                continue
            if not ann.get("segmentation"):
                skipped.append((f"{annotation_file} (annotation {ann['id']})", "annotation without segmentation"))
                continue
            if not coco.annToMask(ann).any():
                skipped.append((f"{annotation_file} (annotation {ann['id']})", "empty mask: no prompt possible"))
                continue
            annotations.append(ann)
        if not annotations:
            continue
        try:
            height, width = _image_hw(image_path)
            if (height, width) != (info["height"], info["width"]):
                raise DataError(f"{image_path}: image size {width}x{height} does not match the annotation "
                                f"file's {info['width']}x{info['height']}")
        except DataError as error:
            skipped.append(_file_and_reason(error))
            continue
        records.append(SampleRecord(image_path=image_path, annotations=annotations, image_hw=(height, width)))
    index = _finish(records, skipped, annotation_file)
    index.coco = coco  # type: ignore[attr-defined]  # kept for annToMask
    return index


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
        mask = read_binary_mask(record.mask_path)
        return split_connected_components(mask) if split_instances else mask[None]
    coco = index.coco  # type: ignore[attr-defined]
    return np.stack([coco.annToMask(ann).astype(np.uint8) for ann in record.annotations])
