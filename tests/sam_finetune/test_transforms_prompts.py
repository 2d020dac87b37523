"""Resize-longest-side + pad, coordinate scaling, normalisation, and prompts drawn from masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from projects.sam_finetune.preprocess import resize_to_input
from projects.sam_finetune.prompts import box_from_mask, jitter_box, sample_points
from projects.sam_finetune.transforms import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    normalize_image,
    pad_to_square,
    resize_mask,
)


@pytest.mark.parametrize(("hw", "target", "expected"), [
    ((480, 640), 1024, (768, 1024)),
    ((1000, 300), 1024, (1024, 307)),
    ((1024, 1024), 1024, (1024, 1024)),
    ((48, 64), 64, (48, 64)),
    ((100, 33), 64, (64, 21)),
])
def test_longest_side_shape(hw, target, expected):
    assert resize_to_input(np.zeros((*hw, 3), np.uint8), target).shape[:2] == expected
    assert ResizeLongestSide.get_preprocess_shape(*hw, target) == expected


def test_resize_and_pad_sizes_on_a_batch_where_segment_anything_1_0_fails():
    images = [np.zeros((480, 640, 3), np.uint8), np.zeros((1000, 300, 3), np.uint8)]
    resized = [resize_to_input(im, 256) for im in images]
    assert [r.shape for r in resized] == [(192, 256, 3), (256, 77, 3)]
    assert all(pad_to_square(r, 256).shape == (256, 256, 3) for r in resized)
    # the released package sizes a batch from its batch and channel dimensions instead of H, W
    batch = torch.zeros(2, 3, 480, 640)
    assert tuple(ResizeLongestSide(256).apply_image_torch(batch).shape[-2:]) != (192, 256)
    mask = np.zeros((480, 640), np.uint8)
    mask[100:200, 300:400] = 1
    small = resize_mask(mask, (192, 256))
    assert small.shape == (192, 256) and set(np.unique(small)) == {0, 1}


def test_normalization_modes_and_zero_padding():
    image = np.full((2, 3, 3), 255, np.uint8)
    sam = normalize_image(image, "sam")
    np.testing.assert_allclose(sam[0, 0], (255 - np.array(SAM_PIXEL_MEAN)) / np.array(SAM_PIXEL_STD), rtol=1e-6)
    np.testing.assert_allclose(normalize_image(image, "zero_one"), 1.0)
    padded = pad_to_square(sam, 4)
    assert padded.shape == (4, 4, 3) and np.all(padded[2:] == 0) and np.all(padded[:, 3:] == 0)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_image(image, "imagenet")


def test_box_from_mask_and_jitter_bounds():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:21, 5:31] = 1
    box = box_from_mask(mask)
    np.testing.assert_array_equal(box, [5, 10, 30, 20])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(jitter_box(box, 0.0, (40, 50), rng), box)
    jittered = np.stack([jitter_box(box, 0.2, (40, 50), rng) for _ in range(200)])
    assert np.abs(jittered - box).max() <= 0.2 * 25 + 1e-4 and np.abs(jittered - box).max() > 1
    assert (jittered[:, 0] >= 0).all() and (jittered[:, 2] <= 49).all() and (jittered[:, 2] > jittered[:, 0]).all()
    with pytest.raises(ValueError, match="empty mask"):
        box_from_mask(np.zeros((4, 4), np.uint8))


def test_points_positive_inside_negative_outside():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    coords, labels = sample_points(mask, 3, 2, np.random.default_rng(0))
    assert coords.shape == (5, 2) and labels.tolist() == [1, 1, 1, 0, 0]
    xs, ys = coords[:, 0].astype(int), coords[:, 1].astype(int)
    assert mask[ys[:3], xs[:3]].all() and not mask[ys[3:], xs[3:]].any()
    full = np.ones((8, 8), np.uint8)  # no background: negatives become "not a point" padding
    coords, labels = sample_points(full, 1, 2, np.random.default_rng(0))
    assert labels.tolist() == [1, -1, -1]
