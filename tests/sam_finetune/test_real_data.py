"""Real-data cases: 16-bit images and masks, label images, malformed COCO files (skipped and counted
with annotation ids, masks decoded lazily), and predict.py's COCO rules and default output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from projects.sam_finetune import data_sources, predict
from projects.sam_finetune.config import DataConfig
from projects.sam_finetune.dataset import PromptedSegmentationDataset
from projects.sam_finetune.synthetic import DISTRACTOR_CATEGORY, TARGET_CATEGORY
from tests.sam_finetune.helpers import IMAGE_SIZE


def _cfg(root, **overrides) -> DataConfig:
    return DataConfig(data_dir=str(root), image_size=IMAGE_SIZE, **overrides)


def test_16bit_image_and_label_mask_become_instances_with_contrast(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    image = np.full((48, 64), 300, np.uint16)
    labels = np.zeros((48, 64), np.uint16)
    labels[5:15, 5:20], labels[25:40, 30:60] = 1000, 7  # two objects, ids as a 16-bit label image
    image[labels > 0] = 3800
    tifffile.imwrite(tmp_path / "images" / "train" / "cells.tif", image)
    cv2.imwrite(str(tmp_path / "masks" / "train" / "cells.png"), labels)
    binary16 = (labels > 0).astype(np.uint16)  # a 16-bit 0/1 mask is a mask, not an empty one
    cv2.imwrite(str(tmp_path / "images" / "train" / "binary.png"), image)
    cv2.imwrite(str(tmp_path / "masks" / "train" / "binary.png"), binary16)

    dataset = PromptedSegmentationDataset(_cfg(tmp_path, max_instances_per_image=8), "train", train=False)
    assert not dataset.skipped and len(dataset) == 2
    binary, cells = dataset[0], dataset[1]
    assert len(cells["masks"]) == 2 and len(binary["masks"]) == 1
    assert cells["masks"][0].sum() == (labels == 7).sum() and cells["masks"][1].sum() == (labels == 1000).sum()
    pixels = cells["image"][0][cells["masks"].amax(0).bool()]
    background = cells["image"][0][:48, :64][~cells["masks"].amax(0).bool()[:48, :64]]
    assert pixels.min() > 2.0 and background.max() < -1.5  # cells white, background black: full contrast
    split = PromptedSegmentationDataset(_cfg(tmp_path, split_instances=True), "train", train=False)
    assert len(split[1]["masks"]) == 2


def _broken_coco(coco_data: Path, tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "coco"
    shutil.copytree(coco_data, root)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    anns = data["annotations"]
    anns[0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # a 2-point polygon
    anns[1]["segmentation"] = "not a segmentation"
    image = next(i for i in data["images"] if i["id"] == anns[2]["image_id"])
    anns[2]["segmentation"] = {"size": [image["height"] + 1, image["width"]], "counts": "abc"}
    anns[3]["image_id"] = 999
    anns[4]["category_id"] = 77
    data["annotations"].append("not even an object")
    path.write_text(json.dumps(data))
    return root, {anns[0]["id"]: "malformed polygon (4 coordinates", anns[1]["id"]: "malformed segmentation (a str",
                  anns[2]["id"]: f"RLE size {image['height'] + 1}x{image['width']} does not match",
                  anns[3]["id"]: "unknown image id 999", anns[4]["id"]: "unknown category id 77"}


def test_malformed_coco_annotations_are_skipped_and_named_and_masks_decode_lazily(coco_data, tmp_path, monkeypatch):
    root, expected = _broken_coco(coco_data, tmp_path)
    decoded = []
    original = data_sources.decode_segmentation
    monkeypatch.setattr(data_sources, "decode_segmentation", lambda *a: decoded.append(1) or original(*a))
    dataset = PromptedSegmentationDataset(_cfg(root, dataset_type="coco"), "train", train=False)
    assert decoded == []  # indexing checks structure only
    reasons = dict(dataset.skipped)
    for ann_id, reason in expected.items():
        assert reasons[f"{root / 'annotations' / 'instances_train.json'} (annotation {ann_id})"].startswith(reason)
    assert reasons[f"{root / 'annotations' / 'instances_train.json'} (annotation ?)"].startswith("malformed annotation")
    counts = dataset.index.skipped_counts
    assert counts["crowd annotation"] == 1 and counts["unknown image id N"] == 1
    item = dataset[0]
    assert decoded and len(item["masks"]) >= 1


def test_predict_coco_prompts_follow_training_rules_and_write_outside_the_data(coco_data, tmp_path, monkeypatch):
    from projects.sam_finetune.modeling.build import build_sam_tiny
    from projects.sam_finetune.preprocess import Preprocessing

    checkpoint_dir = tmp_path / "export"
    checkpoint_dir.mkdir()
    import torch

    torch.save(build_sam_tiny(image_size=IMAGE_SIZE).state_dict(), checkpoint_dir / "sam.pth")
    Preprocessing(image_size=IMAGE_SIZE).save(checkpoint_dir)
    file = coco_data / "annotations" / "instances_train.json"
    data = json.loads(file.read_text())
    name_of = {i["id"]: i["file_name"] for i in data["images"]}
    targets = [a for a in data["annotations"] if a["category_id"] == TARGET_CATEGORY and not a["iscrowd"]]
    prompts = predict.coco_prompts(file, [TARGET_CATEGORY])
    assert sum(len(p["boxes"]) for p in prompts.values()) == len(targets)  # crowd and distractors left out
    everything = predict.coco_prompts(file, [])
    assert sum(len(p["boxes"]) for p in everything.values()) == len(
        [a for a in data["annotations"] if not a["iscrowd"]])
    assert DISTRACTOR_CATEGORY in {a["category_id"] for a in data["annotations"]}
    first = targets[0]
    x, y, w, h = first["bbox"]
    assert [x, y, x + w, y + h] in prompts[name_of[first["image_id"]]]["boxes"]

    monkeypatch.chdir(tmp_path)
    written = predict.main(["--checkpoint", str(checkpoint_dir / "sam.pth"), "--model_type", "tiny",
                            "--image", str(coco_data / "train"), "--prompts", str(file), "--category_ids",
                            str(TARGET_CATEGORY)])
    assert written and all(path.parent == tmp_path / "predictions" for path in written)
    assert not any(coco_data in path.parents for path in written)


@pytest.mark.parametrize("mask", [np.full((48, 64), 0.5, np.float32), np.dstack([np.eye(48, 64)] * 2 + [np.zeros((48, 64))])])
def test_unusable_masks_are_named(tmp_path, mask):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask.astype(mask.dtype if mask.ndim == 2 else np.uint8))
    with pytest.raises(data_sources.DataError, match="mask.tif: (float32 mask|colour mask)"):
        data_sources.read_label_mask(path)
