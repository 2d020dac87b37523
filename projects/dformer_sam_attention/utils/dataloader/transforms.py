"""Training augmentation (random scale, horizontal flip, random crop with padding) and normalisation.

Random rescaling is the augmentation itself (NYU recipe: scale 0.5–1.75); the label is always
resized with nearest neighbour and padded with the ignore value, never interpolated.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

IGNORE_INDEX = 255


def normalize_rgb(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float], channel_order: str = "rgb"
                  ) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (3, H, W) float32 in `channel_order`. As the official loader does, the
    ImageNet mean/std are applied in the stated order to whichever channels come first, so "bgr"
    gives exactly the input the published BGR-trained checkpoints saw."""
    if channel_order == "bgr":
        rgb = rgb[..., ::-1]
    x = rgb.astype(np.float32) / 255.0
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def normalize_depth(depth: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(H, W) uint8 → (1, H, W) float32: /255, then (x − mean)/std as upstream."""
    return ((depth.astype(np.float32) / 255.0 - mean) / std)[None]


def random_scale_flip_crop(rgb: np.ndarray, depth: np.ndarray, label: np.ndarray, scales: Sequence[float],
                           crop_hw: tuple[int, int], rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = float(rng.choice(np.asarray(scales, dtype=np.float64)))
    height, width = label.shape
    new_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    rgb = cv2.resize(rgb, new_hw[::-1], interpolation=cv2.INTER_LINEAR)
    depth = cv2.resize(depth, new_hw[::-1], interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, new_hw[::-1], interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:
        rgb, depth, label = rgb[:, ::-1], depth[:, ::-1], label[:, ::-1]
    crop_h, crop_w = crop_hw
    pad_h, pad_w = max(crop_h - new_hw[0], 0), max(crop_w - new_hw[1], 0)
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)))
        depth = np.pad(depth, ((0, pad_h), (0, pad_w)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    top = int(rng.integers(0, rgb.shape[0] - crop_h + 1))
    left = int(rng.integers(0, rgb.shape[1] - crop_w + 1))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    return (np.ascontiguousarray(rgb[window]), np.ascontiguousarray(depth[window]),
            np.ascontiguousarray(label[window]))


def to_tensors(rgb: np.ndarray, depth: np.ndarray, label: np.ndarray, mean: Sequence[float],
               std: Sequence[float], depth_mean: float, depth_std: float, channel_order: str = "rgb"
               ) -> dict[str, torch.Tensor]:
    return {"rgb": torch.from_numpy(normalize_rgb(rgb, mean, std, channel_order)),
            "depth": torch.from_numpy(normalize_depth(depth, depth_mean, depth_std)),
            "label": torch.from_numpy(label.astype(np.int64))}
