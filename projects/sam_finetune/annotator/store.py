"""The annotation file: COCO with RLE masks, which sam_finetune's COCO loader reads unchanged.

Every change is written at once and atomically (temp file in the same folder, fsync, `os.replace`):
a server killed at any moment leaves the previous complete file. Changes are versioned per image:
a client sends the revision of the image it has seen, and a change based on an older revision
(another tab, or another server on the same file) is refused with `VersionConflict` instead of
overwriting that tab's objects. Several processes on one file serialise through an flock on
`<file>.lock` and re-read the file when another process has written it.

Our own keys ride along where COCO readers ignore them: `info.sam_annotate` (file version, last
image), `images[].sam_annotate_revision`, `annotations[].sam_prompts` (the prompts that made a mask).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from projects.sam_finetune.annotator.images import ImageFolder
from projects.sam_finetune.data_sources import DataError

DEFAULT_CATEGORY = "object"


class VersionConflict(RuntimeError):
    """A change based on an image revision that another tab or process has already changed."""


@dataclass
class NewObject:
    mask: np.ndarray  # (H, W) bool, in the image's own pixel grid
    category_id: int
    prompts: dict[str, Any]  # points, labels, box, candidate


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(segmentation: list | dict[str, Any], height: int, width: int) -> np.ndarray:
    """(H, W) bool from any COCO segmentation: our compressed RLE, uncompressed RLE or polygons
    (a file made elsewhere and opened to add objects)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file beside `path`, flushed to disk, then renamed over it."""
    descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class CocoStore:
    def __init__(self, path: str | Path, images: ImageFolder, categories: list[str] | None = None,
                 png_dir: str | Path | None = None):
        self.path = Path(path)
        self.images = images
        self.png_dir = Path(png_dir) if png_dir is not None else None
        self._lock = threading.Lock()
        if not self.path.parent.is_dir():
            raise DataError(f"{self.path}: its folder {self.path.parent} does not exist")
        self._new_categories = list(categories or [])
        if self.path.exists():
            self._reload()
        else:
            self.data = {"info": {"description": "sam_finetune annotate", "sam_annotate": {"version": 0}},
                         "images": [], "annotations": [], "categories": []}
            self._disk_stamp = None
            self._add_categories(self._new_categories or [DEFAULT_CATEGORY])

    # --- reading and checking ------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{self.path}: not a readable JSON annotation file ({error})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            raise DataError(f"{self.path}: not a COCO file (needs lists 'images', 'annotations', 'categories')")
        data.setdefault("info", {}).setdefault("sam_annotate", {"version": 0})
        image_ids = set()
        for image in data["images"]:
            name = image.get("file_name")
            try:
                self.images.check(name)
            except ValueError:
                raise DataError(f"{self.path}: image {name!r} (id {image.get('id')}) is not in the images folder "
                                f"{self.images.root}") from None
            if "height" not in image or "width" not in image or "id" not in image:
                raise DataError(f"{self.path}: image {name!r} lacks id, height or width")
            image_ids.add(image["id"])
        category_ids = {c.get("id") for c in data["categories"]}
        for ann in data["annotations"]:
            if ann.get("image_id") not in image_ids or ann.get("category_id") not in category_ids:
                raise DataError(f"{self.path}: annotation {ann.get('id')} refers to an unknown image or category")
        return data

    def _reload(self) -> None:
        """Adopt the file on disk (plus the categories given on the command line, saved with the next change)."""
        self.data = self._read()
        self._disk_stamp = self._stamp()
        self._add_categories(self._new_categories or ([] if self.data["categories"] else [DEFAULT_CATEGORY]))

    def _add_categories(self, names: list[str]) -> None:
        known = {c["name"]: c["id"] for c in self.data["categories"]}
        next_id = max(known.values(), default=0) + 1
        for name in names:
            if name not in known:
                self.data["categories"].append({"id": next_id, "name": name})
                known[name] = next_id
                next_id += 1

    # --- what the page reads -------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.data["info"]["sam_annotate"]["version"])

    def categories(self) -> list[dict[str, Any]]:
        return [{"id": c["id"], "name": c["name"]} for c in self.data["categories"]]

    def _image_entry(self, name: str) -> dict[str, Any] | None:
        return next((image for image in self.data["images"] if image["file_name"] == name), None)

    def revision(self, name: str) -> int:
        self.refresh()
        entry = self._image_entry(name)
        return int(entry.get("sam_annotate_revision", 0)) if entry else 0

    def objects(self, name: str) -> list[dict[str, Any]]:
        """The image's annotations, each with its decoded "mask" (H, W) bool."""
        self.refresh()
        entry = self._image_entry(name)
        if entry is None:
            return []
        return [{**ann, "mask": decode_segmentation(ann["segmentation"], entry["height"], entry["width"])}
                for ann in self.data["annotations"] if ann["image_id"] == entry["id"]]

    def object_counts(self) -> dict[str, int]:
        self.refresh()
        by_id = {image["id"]: image["file_name"] for image in self.data["images"]}
        counts = dict.fromkeys(self.images.names, 0)
        for ann in self.data["annotations"]:
            name = by_id[ann["image_id"]]
            if name in counts:
                counts[name] += 1
        return counts

    def resume_name(self) -> str:
        """Where the user stopped: the image of the last change, else the first image."""
        last = self.data["info"]["sam_annotate"].get("last_image")
        return last if last in self.images.names else self.images.names[0]

    def refresh(self) -> None:
        """Re-read the file when another process has written it since we did."""
        with self._lock:
            if self._stamp() != self._disk_stamp and self.path.exists():
                self._reload()

    # --- changes --------------------------------------------------------------------------------

    def add_object(self, name: str, revision: int, new: NewObject, image_hw: tuple[int, int]) -> dict[str, Any]:
        """Append one object to image `name`; -> the saved annotation."""
        if not any(c["id"] == new.category_id for c in self.data["categories"]):
            raise ValueError(f"unknown category id {new.category_id}")
        if new.mask.shape != tuple(image_hw) or not new.mask.any():
            raise ValueError("empty mask: nothing to save")

        def change(data: dict[str, Any]) -> dict[str, Any]:
            entry = self._entry_in(data, name, image_hw)
            rle = encode_rle(new.mask)
            compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            annotation = {
                "id": max((a["id"] for a in data["annotations"]), default=0) + 1, "image_id": entry["id"],
                "category_id": new.category_id, "segmentation": rle, "area": float(mask_utils.area(compressed)),
                "bbox": [float(v) for v in mask_utils.toBbox(compressed)], "iscrowd": 0, "sam_prompts": new.prompts,
            }
            data["annotations"].append(annotation)
            return annotation

        return self._apply(name, revision, change)

    def delete_object(self, name: str, revision: int, annotation_id: int) -> dict[str, Any]:
        def change(data: dict[str, Any]) -> dict[str, Any]:
            entry = self._image_entry_in(data, name)
            found = [a for a in data["annotations"]
                     if a["id"] == annotation_id and entry is not None and a["image_id"] == entry["id"]]
            if not found:
                raise KeyError(f"image {name!r} has no object {annotation_id}")
            data["annotations"].remove(found[0])
            return found[0]

        return self._apply(name, revision, change)

    @staticmethod
    def _image_entry_in(data: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((image for image in data["images"] if image["file_name"] == name), None)

    def _entry_in(self, data: dict[str, Any], name: str, image_hw: tuple[int, int]) -> dict[str, Any]:
        entry = self._image_entry_in(data, name)
        if entry is None:
            entry = {"id": max((i["id"] for i in data["images"]), default=0) + 1, "file_name": name,
                     "height": int(image_hw[0]), "width": int(image_hw[1]), "sam_annotate_revision": 0}
            data["images"].append(entry)
        return entry

    def _apply(self, name: str, revision: int, change) -> dict[str, Any]:
        """Check the revision, change a copy, write it atomically, then adopt it (never half-applied)."""
        self.images.check(name)
        with self._lock, self._file_lock():
            if self._stamp() != self._disk_stamp and self.path.exists():  # another process wrote
                self._reload()
            entry = self._image_entry(name)
            current = int(entry.get("sam_annotate_revision", 0)) if entry else 0
            if revision != current:
                raise VersionConflict(
                    f"{name} was changed elsewhere (another tab or window) since this page loaded it: "
                    f"revision {current} on disk, {revision} here. Its objects were reloaded; "
                    "check them and accept again.")
            data = copy.deepcopy(self.data)
            result = change(data)
            entry = self._image_entry_in(data, name)
            if entry is not None:
                entry["sam_annotate_revision"] = current + 1
            info = data["info"]["sam_annotate"]
            info["version"] = int(info.get("version", 0)) + 1
            info["last_image"] = name
            write_atomically(self.path, json.dumps(data).encode())
            self.data, self._disk_stamp = data, self._stamp()
            if self.png_dir is not None:
                self._export_png(name)
            return result

    @contextlib.contextmanager
    def _file_lock(self):
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _export_png(self, name: str) -> Path:
        """<png_dir>/<name>.png: uint16 instance ids (0 background, k = k-th object; later ones on top)."""
        entry = self._image_entry(name)
        labels = np.zeros((entry["height"], entry["width"]), np.uint16)
        for k, ann in enumerate(a for a in self.data["annotations"] if a["image_id"] == entry["id"]):
            labels[decode_segmentation(ann["segmentation"], entry["height"], entry["width"])] = k + 1
        target = (self.png_dir / name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".png", labels)
        if not ok:
            raise OSError(f"{target}: PNG encoding failed")
        write_atomically(target, encoded.tobytes())
        return target
