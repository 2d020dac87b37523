"""Array helpers of the SAM input frame: mask resizing, padding, normalisation and its inverse.

SAM takes a square `S x S` input: the image resized so its longest side is `S` (aspect ratio kept),
then zero-padded at the bottom and right. The image itself goes through preprocess.py (the one
preprocessing path); masks follow it here with nearest-neighbour resizing to the image's new size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW mask -> `shape` (h, w) with nearest neighbour (the image's size from preprocess.resize_to_input)."""
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def pad_to_square(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad HxW[xC] at the bottom and right to size x size."""
    pad_h, pad_w = size - array.shape[0], size - array.shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad an array of shape {array.shape[:2]} to {size}")
    padding = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding)


def normalize_image(image: np.ndarray, mode: str) -> np.ndarray:
    """HxWx3 pixels in [0, 255] -> float32 at the encoder's input scale.

    "sam": SAM's ImageNet mean/std; "zero_one": pixels / 255, as MedSAM checkpoints expect.
    Normalise before `pad_to_square` so the padding is exactly zero, as in `Sam.preprocess`.
    """
    image = image.astype(np.float32)
    if mode == "zero_one":
        return image / 255.0
    if mode == "sam":
        return (image - np.array(SAM_PIXEL_MEAN, np.float32)) / np.array(SAM_PIXEL_STD, np.float32)
    raise ValueError(f"unknown normalization {mode!r} (expected 'sam' or 'zero_one')")


def denormalize_image(image: torch.Tensor, mode: str) -> np.ndarray:
    """(3, H, W) normalised tensor -> HxWx3 uint8, for pictures of the input."""
    pixels = image.detach().float().cpu().permute(1, 2, 0).numpy()
    if mode == "zero_one":
        pixels = pixels * 255.0
    else:
        pixels = pixels * np.array(SAM_PIXEL_STD, np.float32) + np.array(SAM_PIXEL_MEAN, np.float32)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 float array -> (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
