"""COCO instance annotations: checked one by one without decoding, decoded only when a sample loads.

`read_coco(path, category_ids)` reads the JSON once and sorts every annotation into kept (by image id)
or skipped with its annotation id and reason: malformed (no/short/odd polygon, a string or other
non-segmentation, an RLE whose size is not its image's, bad counts), crowd, unknown image id, unknown
category id. Categories outside `category_ids` are simply not selected. Training (data_sources.py) and
predict.py both use it, so they apply the same category filter and crowd rule.

Checking is structural (numbers and sizes), so indexing a 100k-annotation file takes seconds;
`decode_segmentation` rasterises with pycocotools only when the sample is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from projects.sam_finetune.errors import DataError


@dataclass
class CocoFile:
    path: Path
    images: dict[int, dict[str, Any]]  # id -> {"file_name", "height", "width", ...}
    categories: set[int]
    annotations: dict[int, list[dict[str, Any]]]  # image id -> kept annotations, in file order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("<file> (annotation <id>)", reason)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def polygon_problem(polygons: list[Any]) -> str | None:
    for polygon in polygons:
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            return "malformed polygon (not a list of numbers)"
        if len(polygon) < 6 or len(polygon) % 2:
            return f"malformed polygon ({len(polygon)} coordinates; needs an even count >= 6)"
    return None


def rle_problem(rle: dict[str, Any], height: int, width: int) -> str | None:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return "malformed RLE (size must be [height, width])"
    if tuple(size) != (height, width):
        return f"RLE size {size[0]}x{size[1]} does not match its image's {height}x{width} (height x width)"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            return "malformed RLE (uncompressed counts must be non-negative and sum to height x width)"
    elif not isinstance(counts, str) or not counts:
        return "malformed RLE (counts must be a list of ints or a compressed string)"
    return None


def annotation_problem(ann: Any, images: dict[int, dict[str, Any]], categories: set[int]) -> str | None:
    """Why an annotation cannot be used for training (None: it can)."""
    if not isinstance(ann, dict):
        return "malformed annotation (not an object)"
    image = images.get(ann.get("image_id"))
    if image is None:
        return f"unknown image id {ann.get('image_id')!r}"
    if ann.get("category_id") not in categories:
        return f"unknown category id {ann.get('category_id')!r}"
    if ann.get("iscrowd", 0):
        return "crowd annotation"
    segmentation = ann.get("segmentation")
    if segmentation is None or segmentation == [] or segmentation == {}:
        return "annotation without segmentation"
    if isinstance(segmentation, list):
        return polygon_problem(segmentation)
    if isinstance(segmentation, dict):
        return rle_problem(segmentation, image["height"], image["width"])
    return f"malformed segmentation (a {type(segmentation).__name__}, expected polygons or an RLE)"


def _image_problem(image: Any) -> str | None:
    if not isinstance(image, dict) or not isinstance(image.get("id"), int):
        return "malformed image entry (no integer id)"
    if not isinstance(image.get("file_name"), str):
        return "malformed image entry (no file_name)"
    if not all(isinstance(image.get(k), int) and image[k] > 0 for k in ("height", "width")):
        return "malformed image entry (height and width must be positive integers)"
    return None


def read_coco(path: Path, category_ids: list[int]) -> CocoFile:
    """Read and check a COCO instances file; DataError for a file that is not one at all."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise DataError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    skipped: list[tuple[str, str]] = []
    images = {}
    for number, image in enumerate(data["images"]):
        problem = _image_problem(image)
        if problem:
            skipped.append((f"{path} (image entry {number})", problem))
        else:
            images[image["id"]] = image
    categories = {c.get("id") for c in data.get("categories") or [] if isinstance(c, dict)}
    unknown = sorted(set(category_ids) - categories)
    if unknown:
        raise DataError(f"{path}: category ids {unknown} not in the file (has {sorted(categories)})")
    selected = set(category_ids) or categories
    annotations: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        problem = annotation_problem(ann, images, categories)
        where = f"{path} (annotation {ann.get('id') if isinstance(ann, dict) else '?'})"
        if problem:
            skipped.append((where, problem))
        elif ann["category_id"] in selected:
            annotations.setdefault(ann["image_id"], []).append(ann)
    return CocoFile(path=path, images=images, categories=categories, annotations=annotations, skipped=skipped)


def decode_segmentation(segmentation: list[Any] | dict[str, Any], height: int, width: int) -> np.ndarray:
    """HxW uint8 {0, 1} from polygons or an RLE (checked by `annotation_problem`)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(np.uint8)
