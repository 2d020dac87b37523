"""Training augmentation through albumentations, applied to an image and its instance masks together.

`data.augment` keys -> albumentations transforms, in this order:
- flip_prob     -> HorizontalFlip(p=flip_prob)
- scale_range   -> RandomScale (zoom by a factor drawn from [low, high]), then PadIfNeeded (random
                   position, zeros) and RandomCrop back to the input size: zoom, then crop or pad
- color_jitter  -> ColorJitter of brightness and contrast by factors in [1 - c, 1 + c] (image only)

Masks follow every geometric step with nearest-neighbour resampling. Boxes and points are drawn from
the augmented masks afterwards (dataset.py), so prompts always sit on the object as it is now.
Instances that left the frame are dropped; the caller keeps the un-augmented sample when none is left.
Each sample's transform is seeded from the dataset's (seed, epoch, index) generator: reproducible
whatever the workers.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from projects.sam_finetune.config import AugmentConfig


def changes_pixels(cfg: AugmentConfig) -> bool:
    """Whether this augmentation makes an image's pixels differ between epochs (cache unusable)."""
    return cfg.flip_prob > 0 or cfg.scale_range != [1.0, 1.0] or cfg.color_jitter > 0


def build_augmentation(cfg: AugmentConfig, height: int, width: int) -> A.Compose:
    """The albumentations pipeline of `cfg` for images of height x width (the size is kept)."""
    transforms: list[A.BasicTransform] = []
    if cfg.flip_prob > 0:
        transforms.append(A.HorizontalFlip(p=cfg.flip_prob))
    low, high = cfg.scale_range
    if (low, high) != (1.0, 1.0):
        transforms += [
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.PadIfNeeded(min_height=height, min_width=width, position="random", border_mode=cv2.BORDER_CONSTANT,
                          fill=0, fill_mask=0),
            A.RandomCrop(height=height, width=width),
        ]
    if cfg.color_jitter > 0:
        factors = (1.0 - cfg.color_jitter, 1.0 + cfg.color_jitter)
        transforms.append(A.ColorJitter(brightness=factors, contrast=factors, saturation=(1.0, 1.0), hue=(0.0, 0.0),
                                        p=1.0))
    return A.Compose(transforms)


class Augmenter:
    """`augment(image, masks, rng)` with one pipeline per input size (built on first use)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self._pipelines: dict[tuple[int, int], A.Compose] = {}

    def __call__(self, image: np.ndarray, masks: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """image HxWx3 uint8, masks (N, H, W) uint8 {0, 1} -> the same shapes, augmented together.

        Returns masks of the instances still visible (possibly zero of them).
        """
        size = image.shape[:2]
        if size not in self._pipelines:
            self._pipelines[size] = build_augmentation(self.cfg, *size)
        pipeline = self._pipelines[size]
        pipeline.set_random_seed(int(rng.integers(2**31)))
        out = pipeline(image=image, masks=list(masks))
        augmented = np.stack(out["masks"]).astype(np.uint8) if len(masks) else masks
        visible = augmented.reshape(len(augmented), -1).any(axis=1) if len(augmented) else np.zeros(0, bool)
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(augmented[visible])
