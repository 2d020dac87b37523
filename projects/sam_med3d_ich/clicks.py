"""Click simulation as in SAM-Med3D training, made safe for empty error regions.

Each round one voxel is drawn uniformly from the error region of the current prediction: a missed
voxel (false negative) becomes a positive click, a false-positive voxel a negative one. When the
prediction is already perfect (or both truth and prediction are empty) the sample gets a padding
click (label -1), which the prompt encoder embeds as "not a point" — nothing crashes.
"""

from __future__ import annotations

import torch

from projects.sam_med3d_ich.modeling.prompt_encoder3d import NEGATIVE, PADDING, POSITIVE


def sample_error_clicks(pred: torch.Tensor, truth: torch.Tensor, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, truth: bool [B, 1, D, H, W] -> coords [B, 1, 3] (voxel indices), labels [B, 1]."""
    batch = pred.shape[0]
    coords = torch.zeros(batch, 1, 3, dtype=torch.long, device=pred.device)
    labels = torch.full((batch, 1), PADDING, dtype=torch.long, device=pred.device)
    errors = (pred ^ truth)[:, 0]
    for i in range(batch):
        candidates = errors[i].nonzero()  # [K, 3]
        if len(candidates) == 0:
            continue
        pick = int(torch.randint(len(candidates), (1,), generator=generator))
        point = candidates[pick]
        coords[i, 0] = point
        labels[i, 0] = POSITIVE if bool(truth[i, 0][tuple(point)]) else NEGATIVE
    return coords, labels


def clicks_to_map(clicks: list[tuple[int, int, int, int]], shape: tuple[int, int, int]) -> torch.Tensor:
    """User clicks (d, h, w, label 1/0) -> a [D, H, W] map with +1 / -1 at the clicked voxels, the form
    sliding-window inference cuts into windows along with the image."""
    click_map = torch.zeros(shape)
    for d, h, w, label in clicks:
        if not all(0 <= c < s for c, s in zip((d, h, w), shape)):
            raise ValueError(f"click ({d}, {h}, {w}) lies outside the volume of shape {tuple(shape)}")
        if label not in (POSITIVE, NEGATIVE):
            raise ValueError(f"click label must be 1 (haemorrhage) or 0 (background), got {label}")
        click_map[d, h, w] = 1.0 if label == POSITIVE else -1.0
    return click_map


def map_to_points(click_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[B, D, H, W] click maps of windows -> (coords [B, N, 3], labels [B, N]) padded with -1, or None."""
    per_window = [m.nonzero() for m in click_maps]
    most = max(len(p) for p in per_window)
    if most == 0:
        return None
    batch = click_maps.shape[0]
    coords = torch.zeros(batch, most, 3, dtype=torch.long, device=click_maps.device)
    labels = torch.full((batch, most), PADDING, dtype=torch.long, device=click_maps.device)
    for i, points in enumerate(per_window):
        if len(points):
            coords[i, :len(points)] = points
            values = click_maps[i][tuple(points.T)]
            labels[i, :len(points)] = torch.where(values > 0, POSITIVE, NEGATIVE)
    return coords, labels
