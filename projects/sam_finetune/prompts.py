"""Prompts drawn from a ground-truth instance mask: a (jittered) box and/or sampled points.

Coordinates are x, y in pixels of the frame the mask is in. Point labels follow SAM: 1 positive
(inside the object), 0 negative (background).
"""

from __future__ import annotations

import numpy as np


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight box [x0, y0, x1, y1] around the non-zero pixels of an HxW mask (inclusive pixel edges)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask: no box can be drawn")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def jitter_box(box: np.ndarray, max_fraction: float, image_hw: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """Move each side by up to `max_fraction` of the box's width/height (MedSAM-style noise), clipped
    to the image and kept non-degenerate."""
    if max_fraction <= 0:
        return box.copy()
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    shift = rng.uniform(-max_fraction, max_fraction, size=4) * np.array([w, h, w, h])
    x0, y0, x1, y1 = box + shift
    height, width = image_hw
    x0, x1 = np.clip([x0, x1], 0, width - 1)
    y0, y1 = np.clip([y0, y1], 0, height - 1)
    x0, x1 = min(x0, x1), max(x0, x1, min(x0, x1) + 1)
    y0, y1 = min(y0, y1), max(y0, y1, min(y0, y1) + 1)
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def sample_points(mask: np.ndarray, num_positive: int, num_negative: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`num_positive` points drawn uniformly from the mask, `num_negative` from the background
    inside the object's box grown by half its size (informative negatives, not far-away corners).

    Returns coords (P, 2) float32 x/y and labels (P,) int64. Draws with replacement when the region
    has fewer pixels than requested; when there is no background near the object, the whole
    image's background is used (and "not a point" padding, label -1, when there is none).
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask: no point can be drawn")
    pick = rng.choice(len(xs), size=num_positive, replace=len(xs) < num_positive)
    coords = [np.stack([xs[pick], ys[pick]], axis=1)]
    labels = [np.ones(num_positive, dtype=np.int64)]
    if num_negative > 0:
        height, width = mask.shape
        x0, y0, x1, y1 = box_from_mask(mask)
        grow_x, grow_y = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
        near = np.zeros_like(mask, dtype=bool)
        near[int(max(0, y0 - grow_y)):int(min(height, y1 + grow_y + 1)),
             int(max(0, x0 - grow_x)):int(min(width, x1 + grow_x + 1))] = True
        background = near & (mask == 0)
        if not background.any():
            background = mask == 0
        nys, nxs = np.nonzero(background)
        if len(nxs) > 0:
            pick = rng.choice(len(nxs), size=num_negative, replace=len(nxs) < num_negative)
            coords.append(np.stack([nxs[pick], nys[pick]], axis=1))
            labels.append(np.zeros(num_negative, dtype=np.int64))
        else:  # the object fills the image: SAM's "not a point" padding keeps shapes equal
            coords.append(np.zeros((num_negative, 2)))
            labels.append(np.full(num_negative, -1, dtype=np.int64))
    return np.concatenate(coords).astype(np.float32), np.concatenate(labels)
