"""Datasets in both layouts, prompts per instance, augmentation, bad samples, --visualize."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import tifffile
import torch

from projects.sam_finetune import dataset as dataset_cli
from projects.sam_finetune.config import AugmentConfig, DataConfig
from projects.sam_finetune.data_sources import DataError, index_directory, read_label_mask
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.synthetic import TARGET_CATEGORY
from tests.sam_finetune.helpers import IMAGE_SIZE


def _cfg(root, **overrides) -> DataConfig:
    return DataConfig(data_dir=str(root), image_size=IMAGE_SIZE, **overrides)


def _components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_directory_items_in_input_frame_and_instance_split(directory_data):
    whole = PromptedSegmentationDataset(_cfg(directory_data, prompt_mode="both"), "train", train=False)
    split = PromptedSegmentationDataset(_cfg(directory_data, split_instances=True), "train", train=False)
    assert len(whole) == 24 and not whole.skipped
    item = whole[1]
    assert item["image"].shape == (3, IMAGE_SIZE, IMAGE_SIZE) and item["masks"].shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    h, w = item["input_size"]
    assert max(h, w) == IMAGE_SIZE and item["original_size"] == (h, w)
    assert item["masks"][:, h:, :].sum() == 0 and item["masks"][:, :, w:].sum() == 0  # padding is background
    assert item["boxes"].shape == (1, 4) and item["point_coords"].shape == (1, 1, 2)
    for i in range(len(split)):
        mask = read_label_mask(directory_data / "masks" / "train" / f"img_{i:04d}.png")
        assert len(split[i]["masks"]) == _components(mask)
        assert torch.equal(split[i]["masks"].amax(0), whole[i]["masks"][0])


def test_coco_polygons_and_rle_category_filter_and_crowd(coco_data):
    everything = PromptedSegmentationDataset(_cfg(coco_data, dataset_type="coco"), "train", train=False)
    targets = PromptedSegmentationDataset(_cfg(coco_data, dataset_type="coco", category_ids=[TARGET_CATEGORY]),
                                          "train", train=False)
    annotations = json.loads((coco_data / "annotations" / "instances_train.json").read_text())["annotations"]
    kept = [a for a in annotations if not a["iscrowd"]]
    assert sum(len(r.annotations) for r in everything.index.records) == len(kept)
    assert sum(len(r.annotations) for r in targets.index.records) == sum(a["category_id"] == 1 for a in kept)
    assert {type(a["segmentation"]) for a in kept} == {list, dict}  # both polygons and RLE are read
    assert everything.index.skipped_counts == {"crowd annotation": 1}
    item = targets[0]
    assert len(item["masks"]) == len(targets.index.records[0].annotations)
    with pytest.raises(DataError, match=r"category ids \[7\] not in the file"):
        PromptedSegmentationDataset(_cfg(coco_data, dataset_type="coco", category_ids=[7]), "train", train=False)


def test_prompt_modes_points_and_instance_cap(directory_data):
    cfg = _cfg(directory_data, prompt_mode="point", num_points=3, num_negative_points=2, split_instances=True,
               max_instances_per_image=1)
    item = PromptedSegmentationDataset(cfg, "train", train=False)[2]
    assert item["boxes"] is None and item["point_coords"].shape == (1, 5, 2)
    assert item["point_labels"][0].tolist() == [1, 1, 1, 0, 0]
    many = PromptedSegmentationDataset(_cfg(directory_data, split_instances=True, max_instances_per_image=16),
                                       "train", train=False)
    assert max(len(many[i]["masks"]) for i in range(len(many))) > 1
    batch = collate_prompted([many[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and len(batch["masks"]) == 3
    assert batch["index"].tolist() == [0, 1, 2] and batch["errors"] == []


def test_box_jitter_only_in_training_and_reproducible_per_epoch(directory_data):
    cfg = _cfg(directory_data, box_jitter=0.2)
    train = PromptedSegmentationDataset(cfg, "train", train=True)
    evaluation = PromptedSegmentationDataset(cfg, "train", train=False)
    exact = PromptedSegmentationDataset(_cfg(directory_data, box_jitter=0.0), "train", train=True)
    assert torch.equal(evaluation[0]["boxes"], exact[0]["boxes"])
    assert not torch.equal(train[0]["boxes"], evaluation[0]["boxes"])
    first = train[0]["boxes"]
    assert torch.equal(train[0]["boxes"], first)  # same (seed, epoch, index): same prompt
    train.set_epoch(1)
    assert not torch.equal(train[0]["boxes"], first)


def test_normalization_key(directory_data):
    sam = PromptedSegmentationDataset(_cfg(directory_data), "train", train=False)[0]["image"]
    unit = PromptedSegmentationDataset(_cfg(directory_data, normalization="zero_one"), "train", train=False)[0]["image"]
    assert 0.0 <= unit.min() and unit.max() <= 1.0 and sam.min() < -1.0
    torch.testing.assert_close(unit[0] * 255, sam[0] * 58.395 + 123.675 * (unit[0] > 0) , atol=2e-3, rtol=0)


@pytest.mark.parametrize("augment", [AugmentConfig(flip_prob=1.0), AugmentConfig(scale_range=[1.3, 1.3]),
                                     AugmentConfig(color_jitter=0.5)])
def test_each_augmentation_key_changes_pixels_and_keeps_masks_aligned(directory_data, augment):
    plain = PromptedSegmentationDataset(_cfg(directory_data), "train", train=True)
    augmented = PromptedSegmentationDataset(_cfg(directory_data, augment=augment), "train", train=True)
    assert plain.pixels_fixed and not augmented.pixels_fixed
    a, b = plain[3], augmented[3]
    assert not torch.equal(a["image"], b["image"])
    if augment.color_jitter:
        assert torch.equal(a["masks"], b["masks"])
    elif augment.flip_prob:
        h, w = a["input_size"]
        assert torch.equal(b["masks"][..., :h, :w], a["masks"][..., :h, :w].flip(-1))
        torch.testing.assert_close(b["image"][..., :h, :w], a["image"][..., :h, :w].flip(-1))
    else:
        assert not torch.equal(a["masks"], b["masks"])
    # the target objects are red: masks still cover red pixels after the geometric change
    red = b["image"][0] > b["image"][2] + 1.0
    covered = b["masks"].amax(0).bool()
    assert (red & covered).sum() > 0.7 * covered.sum()
    assert PromptedSegmentationDataset(_cfg(directory_data, augment=augment), "train", train=False).pixels_fixed


def _break(root, name):
    return root / "masks" / "train" / name


def test_bad_samples_are_skipped_counted_and_named(directory_data, tmp_path, caplog):
    root = tmp_path / "broken"
    shutil.copytree(directory_data, root)
    cv2.imwrite(str(_break(root, "img_0000.png")), np.zeros((10, 10), np.uint8) + 255)  # size mismatch
    _break(root, "img_0001.png").unlink()  # missing mask
    tifffile.imwrite(_break(root, "img_0002.tif"), np.full((64, 48), 0.5, np.float32))  # not integer ids
    _break(root, "img_0002.png").unlink()
    cv2.imwrite(str(_break(root, "img_0003.png")), np.zeros((64, 48), np.uint8))  # empty
    (root / "images" / "train" / "img_0004.png").write_bytes(b"not a png")  # unreadable image
    cv2.imwrite(str(_break(root, "img_0005.png")), np.ones((64, 48), np.uint8))  # 0/1 mask: accepted
    index = index_directory(root, "train")
    assert len(index.records) == 19
    reasons = dict(index.skipped)
    assert "mask size 10x10 does not match image size 64x48" in reasons[str(_break(root, "img_0000.png"))]
    assert reasons[str(_break(root, "img_0001.png"))] == "missing mask"
    assert reasons[str(_break(root, "img_0002.tif"))] == "float32 mask (expected integer object ids)"
    assert reasons[str(_break(root, "img_0003.png"))] == "empty mask (no prompt possible)"
    assert "unreadable image" in reasons[str(root / "images" / "train" / "img_0004.png")]
    assert sum(index.skipped_counts.values()) == 5
    assert "img_0002.tif: float32 mask" in caplog.text


def test_coco_annotation_without_segmentation_is_skipped(coco_data, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_data, root)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = []
    path.write_text(json.dumps(data))
    ds = PromptedSegmentationDataset(_cfg(root, dataset_type="coco"), "train", train=False)
    assert ds.index.skipped_counts["annotation without segmentation"] == 1
    assert any("(annotation 1)" in path for path, _ in ds.skipped)


def test_a_sample_broken_after_indexing_is_dropped_by_collate(directory_data, tmp_path):
    root = tmp_path / "late"
    shutil.copytree(directory_data, root)
    ds = PromptedSegmentationDataset(_cfg(root), "train", train=True)
    (root / "images" / "train" / "img_0001.png").write_bytes(b"")
    batch = collate_prompted([ds[0], ds[1], ds[2]])
    assert batch["index"].tolist() == [0, 2] and len(batch["errors"]) == 1 and "img_0001.png" in batch["errors"][0]


def test_visualize_cli_writes_dataset_sample(directory_data, coco_data, tmp_path, capsys):
    out = tmp_path / "dataset_sample.png"
    assert dataset_cli.main(["--data_dir", str(directory_data), "--dataset_type", "directory", "--split", "train",
                             "--visualize", "--image_size", "64", "--output", str(out)]) == 0
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] == 4 * picture.shape[0]  # --num_samples 4 by default
    printed = capsys.readouterr().out
    assert "24 images, 24 instances" in printed
    assert dataset_cli.main(["--data_dir", str(directory_data), "--split", "train", "--split_instances",
                             "--visualize", "--num_samples", "2", "--output", str(out)]) == 0
    assert "24 images, 24 instances" not in capsys.readouterr().out
    assert cv2.imread(str(out)).shape[1] == 2 * cv2.imread(str(out)).shape[0]
    args = dataset_cli.parse_args(["--data_dir", "d", "--prompt_mode", "point", "--num_points", "3",
                                   "--image_size", "128", "--dataset_type", "coco"])
    assert dataset_cli.data_config_from_args(args) == DataConfig(data_dir="d", dataset_type="coco", image_size=128,
                                                                 prompt_mode="point", num_points=3)
    assert dataset_cli.main(["--data_dir", str(coco_data), "--dataset_type", "coco", "--split", "val",
                             "--visualize", "--output", str(tmp_path / "coco.png")]) == 0
    assert (tmp_path / "coco.png").stat().st_size > 0
    assert dataset_cli.main(["--data_dir", str(tmp_path / "nowhere"), "--split", "train"]) == 2
    assert "image folder of split 'train' not found" in capsys.readouterr().err


def test_worker_processes_load_the_same_batches(directory_data):
    from shared.distributed import make_dataloader, set_loader_epoch

    dataset = PromptedSegmentationDataset(_cfg(directory_data, box_jitter=0.2), "train", train=True)
    batches = {}
    for workers in (0, 2):
        loader = make_dataloader(dataset, 4, shuffle=True, seed=3, num_workers=workers, collate_fn=collate_prompted)
        assert loader.num_workers == workers
        for epoch in (0, 1):  # the loader's workers persist: the new epoch must still reach them
            dataset.set_epoch(epoch)
            set_loader_epoch(loader, epoch)
            batches[workers, epoch] = [(b["index"].tolist(), torch.cat(b["boxes"])) for b in loader]
    for epoch in (0, 1):
        for (index0, boxes0), (index2, boxes2) in zip(batches[0, epoch], batches[2, epoch]):
            assert index0 == index2 and torch.equal(boxes0, boxes2)  # prompts seeded per sample, not per worker
    first = {i: box for index, boxes in batches[2, 0] for i, box in zip(index, boxes)}
    second = {i: box for index, boxes in batches[2, 1] for i, box in zip(index, boxes)}
    assert not torch.equal(first[0], second[0])  # epoch 1 draws new jitter in the workers too


def test_exif_rotated_jpeg_is_read_as_stored_like_its_mask(tmp_path):
    from PIL import Image

    pixels = np.full((48, 64, 3), 30, np.uint8)
    pixels[:, :16] = 220  # the object: the left 16 columns of the stored grid
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° to display": OpenCV applies it by default, PIL's size does not
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "images" / "train" / "photo.jpg", exif=exif, quality=95)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :16] = 255
    cv2.imwrite(str(tmp_path / "masks" / "train" / "photo.png"), mask)
    item = PromptedSegmentationDataset(_cfg(tmp_path), "train", train=False)[0]
    assert "error" not in item and item["input_size"] == (48, 64)
    red, inside = item["image"][0, :48, :64], item["masks"][0, :48, :64].bool()
    assert red[inside].mean() > 1.0 and red[~inside].mean() < -1.0  # the bright columns are the mask's


def test_augmented_prompts_sit_on_the_augmented_masks_and_repeat_per_epoch(directory_data):
    augment = AugmentConfig(flip_prob=0.5, scale_range=[0.7, 1.4], color_jitter=0.3)
    cfg = _cfg(directory_data, augment=augment, box_jitter=0.0, prompt_mode="both", num_points=2,
               split_instances=True)
    dataset = PromptedSegmentationDataset(cfg, "train", train=True)
    for index in range(6):
        item = dataset[index]
        for mask, box, points in zip(item["masks"], item["boxes"], item["point_coords"]):
            ys, xs = mask.nonzero(as_tuple=True)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()]
            assert all(mask[int(y), int(x)] == 1 for x, y in points.tolist())
    again = dataset[2]
    assert torch.equal(again["image"], dataset[2]["image"]) and torch.equal(again["masks"], dataset[2]["masks"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["image"], again["image"])
