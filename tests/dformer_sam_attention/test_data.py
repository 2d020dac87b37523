"""NYU-layout data: the synthetic generator, validation of bad input, labels and augmentation."""

from __future__ import annotations

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from projects.dformer_sam_attention.local_configs.config import load_config
from projects.dformer_sam_attention.utils.dataloader.dataloader import get_eval_loader
from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import DatasetError, RGBXDataset, hold_out
from projects.dformer_sam_attention.utils.synthetic_scenes import (
    SYNTHETIC_CLASS_NAMES,
    make_dataset,
    render_scene,
)

CONFIG = load_config("local_configs.NYUDepthv2.DFormerv2_Tiny")


@pytest.fixture
def small_data(tmp_path):
    return make_dataset(tmp_path / "nyu", n_train=4, n_test=2, seed=3)


def test_generator_writes_the_nyu_layout(synthetic_data):
    lines = (synthetic_data / "train.txt").read_text().splitlines()
    assert len(lines) == 48 and lines[0] == "RGB/00000.jpg Label/00000.png"
    depth = cv2.imread(str(synthetic_data / "Depth" / "00000.png"), cv2.IMREAD_UNCHANGED)
    label = cv2.imread(str(synthetic_data / "Label" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint8 and depth.shape == (64, 64)
    assert set(np.unique(label)) <= set(range(len(SYNTHETIC_CLASS_NAMES) + 1))
    # near = dark: the floor at the bottom is nearer than the wall
    assert depth[-5, :].mean() < depth[label == 1].mean()
    # known geometry: spheres bulge towards the camera, boxes are flat
    all_labels = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (synthetic_data / "Label").glob("*.png")])
    assert {4, 5} <= set(np.unique(all_labels))


def test_dataset_items_and_gt_transform(small_data):
    dataset = RGBXDataset(replace(CONFIG, dataset_path=str(small_data)), "test")
    item = dataset[0]
    assert item["rgb"].shape == (3, 64, 64) and item["depth"].shape == (1, 64, 64)
    raw = cv2.imread(str(small_data / "Label" / f"{item['name']}.png"), cv2.IMREAD_UNCHANGED)
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert torch.equal(item["label"], torch.from_numpy(expected))
    # --no-gt_transform keeps the raw values; they exceed 5 classes (value 5 ≥ 5) → a named error
    with pytest.raises(DatasetError, match=r"Label/0000\d\.png: label values \[5\]"):
        RGBXDataset(replace(CONFIG, dataset_path=str(small_data), gt_transform=False), "test")


def test_training_augmentation_is_seeded_and_pads_labels_with_ignore(small_data):
    config = replace(CONFIG, dataset_path=str(small_data), train_scale_array=(0.5,), image_height=48,
                     image_width=48)
    dataset = RGBXDataset(config, "train", seed=1)
    item = dataset[0]
    assert item["rgb"].shape == (3, 48, 48)
    assert (item["label"] == 255).float().mean() > 0.3  # a 32×32 image padded to 48×48
    assert torch.equal(dataset[0]["rgb"], item["rgb"])  # same (seed, epoch, index) → same crop
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["label"], item["label"]) or not torch.equal(dataset[0]["rgb"], item["rgb"])


def corrupt(root, kind: str):
    if kind == "missing depth":
        (root / "Depth" / "00001.png").unlink()
        return "Depth/00001.png: missing depth map for 00001.jpg"
    if kind == "size mismatch":
        cv2.imwrite(str(root / "Depth" / "00001.png"), np.zeros((32, 64), np.uint8))
        return "Depth/00001.png: depth is 64×32 but 00001.jpg is 64×64"
    if kind == "label mismatch":
        cv2.imwrite(str(root / "Label" / "00001.png"), np.zeros((64, 60), np.uint8))
        return "Label/00001.png: label is 60×64"
    if kind == "bad label value":
        label = cv2.imread(str(root / "Label" / "00001.png"), cv2.IMREAD_UNCHANGED)
        label[10, 10] = 9
        cv2.imwrite(str(root / "Label" / "00001.png"), label)
        return "Label/00001.png: label values [8] are ≥ 5 classes"
    if kind == "16-bit label value":  # 301 − 1 = 300 must be reported, not wrap around to a class as uint8
        label = cv2.imread(str(root / "Label" / "00001.png"), cv2.IMREAD_UNCHANGED).astype(np.uint16)
        label[10, 10] = 301
        cv2.imwrite(str(root / "Label" / "00001.png"), label)
        return "Label/00001.png: label values [300] are ≥ 5 classes"
    if kind == "16-bit depth":
        cv2.imwrite(str(root / "Depth" / "00001.png"), np.zeros((64, 64), np.uint16))
        return "Depth/00001.png: depth must be an 8-bit PNG"
    if kind == "missing image":
        (root / "RGB" / "00001.jpg").unlink()
        return "RGB/00001.jpg: listed in train.txt but does not exist"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing depth", "size mismatch", "label mismatch", "bad label value",
                                  "16-bit label value", "16-bit depth", "missing image"])
def test_bad_input_is_named_or_skipped_and_counted(small_data, kind):
    message = corrupt(small_data, kind)
    config = replace(CONFIG, dataset_path=str(small_data))
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RGBXDataset(config, "train")
    with pytest.warns(UserWarning, match="skipping sample"):
        dataset = RGBXDataset(config, "train", skip_bad_samples=True)
    assert len(dataset) == 3 and [s["sample"] for s in dataset.skipped] == ["RGB/00001.jpg"]
    assert "00001" not in [name for name, *_ in dataset.samples]


def test_missing_list_and_empty_split(tmp_path, small_data):
    config = replace(CONFIG, dataset_path=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere/train.txt: split list does not exist"):
        RGBXDataset(config, "train")
    (small_data / "test.txt").write_text("\n")
    with pytest.raises(DatasetError, match="test.txt: split list is empty"):
        RGBXDataset(replace(CONFIG, dataset_path=str(small_data)), "test")
    shutil.rmtree(small_data / "Label")
    with pytest.raises(DatasetError, match="no usable samples"), pytest.warns(UserWarning):
        RGBXDataset(replace(CONFIG, dataset_path=str(small_data)), "train", skip_bad_samples=True)


def test_validation_is_held_out_of_train_by_image(small_data):
    config = replace(CONFIG, dataset_path=str(small_data))
    train = RGBXDataset(config, "train", seed=0, val_fraction=0.25)
    val = RGBXDataset(config, "val", seed=0, val_fraction=0.25)
    train_names, val_names = {s[0] for s in train.samples}, {s[0] for s in val.samples}
    assert len(val_names) == 1 and len(train_names) == 3 and not train_names & val_names
    assert val.train is False  # whole images, no augmentation
    assert hold_out(list("abcdefghij"), 0.3, seed=1) == hold_out(list("abcdefghij"), 0.3, seed=1)
    assert len(hold_out(list("abcdefghij"), 0.3, seed=1)) == 3
    assert hold_out(list("abcdefghij"), 0.3, seed=1) != hold_out(list("abcdefghij"), 0.3, seed=2)
    with pytest.raises(ValueError, match="needs val_fraction > 0"):
        RGBXDataset(config, "val")


def test_sun_rgbd_config_and_images_of_varying_size(small_data):
    """SUN RGB-D: 37 classes, the official `labels/` folder, images of several sizes (four sensors)."""
    sun = load_config("local_configs.SUNRGBD.DFormerv2_S")
    assert (sun.dataset_name, sun.num_classes, sun.gt_transform, sun.eval_batch_size) == ("SUNRGBD", 37, True, 1)
    assert (sun.image_height, sun.image_width, sun.class_names[-1]) == (480, 480, "bag")
    assert (sun.label_folder, sun.channel_order) == ("labels", "rgb")
    (small_data / "Label").rename(small_data / "labels")
    rgb, depth, label = render_scene(np.random.default_rng(0), 40, 56)  # one train and one test image resized
    for name in ("00001", "00005"):
        cv2.imwrite(str(small_data / "RGB" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(small_data / "Depth" / f"{name}.png"), depth)
        cv2.imwrite(str(small_data / "labels" / f"{name}.png"), label)
    config = replace(sun, dataset_path=str(small_data), image_height=32, image_width=32, num_workers=0)
    train = RGBXDataset(config, "train")
    assert {tuple(train[i]["rgb"].shape) for i in range(len(train))} == {(3, 32, 32)}  # one crop size to batch
    loader, test = get_eval_loader(config, "test", skip_bad_samples=False, seed=0)
    sizes = [(tuple(batch["rgb"].shape[2:]), tuple(batch["label"].shape[1:])) for batch in loader]
    assert sizes == [((64, 64), (64, 64)), ((40, 56), (40, 56))]  # whole images, native size, one at a time
    values = set(test[1]["label"].unique().tolist())
    assert 255 in values and values - {255} <= set(range(5))  # labels − 1, the border 0 → ignore


def test_command_line_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "projects" / "dformer_sam_attention"
    result = subprocess.run([sys.executable, "utils/train.py", "--config", "local_configs.NYUDepthv2.DFormerv2_Tiny",
                             "--dataset_path", str(tmp_path / "missing")], cwd=tool, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing' / 'train.txt'}: split list does not exist"


def test_truncated_jpeg_is_named_or_skipped_not_filled_grey(small_data):
    path = small_data / "RGB" / "00002.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # OpenCV would decode this with its bottom half grey
    assert cv2.imread(str(path)) is not None
    config = replace(CONFIG, dataset_path=str(small_data))
    with pytest.raises(DatasetError, match="00002.jpg: damaged or truncated image"):
        RGBXDataset(config, "train")
    with pytest.warns(UserWarning, match="skipping sample"):
        dataset = RGBXDataset(config, "train", skip_bad_samples=True)
    assert [s["sample"] for s in dataset.skipped] == ["RGB/00002.jpg"]


def test_channel_order_follows_the_official_loader(small_data):
    """NYU: BGR (OpenCV order) normalised with the ImageNet mean in that order, as the official loader."""
    nyu = load_config("local_configs.NYUDepthv2.DFormerv2_S")
    assert nyu.channel_order == "bgr" and nyu.official_recipe
    rgb_config = replace(CONFIG, dataset_path=str(small_data), channel_order="rgb")
    bgr_config = replace(rgb_config, channel_order="bgr")
    rgb_item, bgr_item = RGBXDataset(rgb_config, "test")[0], RGBXDataset(bgr_config, "test")[0]
    image = cv2.imread(str(small_data / "RGB" / f"{bgr_item['name']}.jpg"))  # BGR as OpenCV reads it
    mean, std = np.array(CONFIG.norm_mean), np.array(CONFIG.norm_std)
    expected = ((image / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(bgr_item["rgb"].numpy(), expected, atol=1e-5)
    assert torch.equal(bgr_item["depth"], rgb_item["depth"]) and not torch.equal(bgr_item["rgb"], rgb_item["rgb"])
