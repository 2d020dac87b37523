"""Augmentations applied identically to an image and its instance masks.

Geometry (horizontal flip, zoom then crop or pad back to the same size) moves image and masks
together; colour jitter (brightness, contrast) touches the image only. Instances that leave the
frame are dropped; the caller keeps the un-augmented sample when none is left.
"""

from __future__ import annotations

import cv2
import numpy as np

from projects.sam_finetune.config import AugmentConfig


def changes_pixels(cfg: AugmentConfig) -> bool:
    """Whether this augmentation makes an image's pixels differ between epochs (cache unusable)."""
    return cfg.flip_prob > 0 or cfg.scale_range != [1.0, 1.0] or cfg.color_jitter > 0


def _zoom_crop(array: np.ndarray, scale: float, offset: tuple[float, float], is_mask: bool) -> np.ndarray:
    """Zoom HxW[xC] by `scale`, then crop (scale > 1) or zero-pad (scale < 1) back to HxW; `offset`
    in [0, 1]^2 picks where the crop/pad window sits."""
    h, w = array.shape[:2]
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_NEAREST if is_mask else cv2.INTER_LINEAR
    zoomed = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    out = np.zeros_like(array)
    dy, dx = int(offset[0] * abs(new_h - h)), int(offset[1] * abs(new_w - w))
    if new_h >= h:
        src_y, dst_y, ch = dy, 0, h
    else:
        src_y, dst_y, ch = 0, dy, new_h
    if new_w >= w:
        src_x, dst_x, cw = dx, 0, w
    else:
        src_x, dst_x, cw = 0, dx, new_w
    out[dst_y:dst_y + ch, dst_x:dst_x + cw] = zoomed[src_y:src_y + ch, src_x:src_x + cw]
    return out


def augment_sample(image: np.ndarray, masks: np.ndarray, cfg: AugmentConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """image HxWx3 uint8, masks (N, H, W) uint8 {0, 1} -> the same shapes, augmented together.

    Returns masks of the instances still visible (possibly zero of them).
    """
    if cfg.flip_prob > 0 and rng.random() < cfg.flip_prob:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    low, high = cfg.scale_range
    if (low, high) != (1.0, 1.0):
        scale = float(rng.uniform(low, high))
        offset = (float(rng.random()), float(rng.random()))
        image = _zoom_crop(np.ascontiguousarray(image), scale, offset, is_mask=False)
        masks = np.stack([_zoom_crop(np.ascontiguousarray(m), scale, offset, is_mask=True) for m in masks]) \
            if len(masks) else masks
    if cfg.color_jitter > 0:
        brightness = rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter)
        contrast = rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter)
        pixels = image.astype(np.float32)
        pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
        image = np.clip(pixels * brightness, 0, 255).astype(np.uint8)
    visible = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
    return np.ascontiguousarray(image), np.ascontiguousarray(masks[visible])
