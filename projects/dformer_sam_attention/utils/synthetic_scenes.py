"""Synthetic RGB-D indoor scenes in the NYU Depth v2 layout, for tests and the demo.

Each scene: a ceiling band, a back wall, a floor receding to the horizon, and a few boxes and spheres
standing on the floor at known depths. Boxes and spheres draw their colours from the same palette, so
telling them apart needs shape and depth (a sphere's depth bulges towards the camera, a box's is flat).
Depth is 8-bit with near = dark, as in NYU; labels are 1..K with 0 = unlabelled (a border frame), so
`gt_transform` maps them to 0..K−1 and 255.

Layout written: RGB/<name>.jpg, Depth/<name>.png, Label/<name>.png, train.txt, test.txt
(lines `RGB/<name>.jpg Label/<name>.png`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SYNTHETIC_CLASS_NAMES = ("wall", "floor", "ceiling", "box", "sphere")
WALL, FLOOR, CEILING, BOX, SPHERE = range(1, 6)  # label values on disk; 0 = unlabelled


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ rgb (H, W, 3) uint8 RGB, depth (H, W) uint8 (near = dark), label (H, W) uint8."""
    rows = np.arange(height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
    cols = np.ones((height, 1), np.float32) * np.arange(width, dtype=np.float32)[None, :]
    horizon = int(height * rng.uniform(0.4, 0.55))
    ceiling_end = int(height * rng.uniform(0.1, 0.2))
    wall_depth = rng.uniform(190, 235)

    label = np.full((height, width), WALL, np.uint8)
    depth = np.full((height, width), wall_depth, np.float32)
    label[:ceiling_end] = CEILING
    depth[:ceiling_end] = wall_depth - (ceiling_end - rows[:ceiling_end]) / ceiling_end * rng.uniform(60, 100)
    label[horizon:] = FLOOR
    floor_t = (rows[horizon:] - horizon) / max(height - horizon - 1, 1)  # 0 at horizon, 1 at bottom
    depth[horizon:] = wall_depth - floor_t * (wall_depth - rng.uniform(20, 45))

    base = {WALL: rng.uniform(150, 210, 3), FLOOR: rng.uniform(70, 130, 3), CEILING: rng.uniform(200, 250, 3)}
    rgb = np.zeros((height, width, 3), np.float32)
    for cls, colour in base.items():
        rgb[label == cls] = colour
    rgb[horizon:] *= (0.85 + 0.15 * ((cols[horizon:] // 6 + rows[horizon:] // 6) % 2))[..., None]  # floor tiles

    objects = []
    for _ in range(rng.integers(2, 5)):
        kind = BOX if rng.random() < 0.5 else SPHERE
        foot = rng.uniform(horizon + 2, height - 2)  # where it stands on the floor
        t = (foot - horizon) / max(height - horizon - 1, 1)
        size = (0.12 + 0.22 * t) * min(height, width) * rng.uniform(0.8, 1.2)
        obj_depth = float(depth[min(int(foot), height - 1), 0]) - rng.uniform(5, 15)
        objects.append((obj_depth, kind, foot, rng.uniform(0, width), size, rng.uniform(40, 240, 3)))
    for obj_depth, kind, foot, cx, size, colour in sorted(objects, key=lambda o: -o[0]):  # far first
        if kind == BOX:
            w, h = size * rng.uniform(0.8, 1.5), size * rng.uniform(0.7, 1.2)
            mask = (np.abs(cols - cx) <= w / 2) & (rows <= foot) & (rows >= foot - h)
            obj_d = np.full_like(depth, obj_depth)
            shade = np.ones_like(depth)
        else:
            r = size / 2
            cy = foot - r
            dist2 = ((cols - cx) ** 2 + (rows - cy) ** 2) / r**2
            mask = dist2 <= 1.0
            bulge = np.sqrt(np.clip(1.0 - dist2, 0.0, 1.0))
            obj_d = obj_depth - bulge * r * 1.5
            shade = 0.6 + 0.4 * bulge
        label[mask] = kind
        depth[mask] = obj_d[mask]
        rgb[mask] = (colour[None, :] * shade[mask][:, None])

    rgb += rng.normal(0, 6, rgb.shape)
    depth += rng.normal(0, 1.5, depth.shape)
    border = max(1, min(height, width) // 32)  # an unlabelled frame, as NYU's crop border
    label[:border], label[-border:], label[:, :border], label[:, -border:] = 0, 0, 0, 0
    return (np.clip(rgb, 0, 255).astype(np.uint8), np.clip(depth, 1, 255).astype(np.uint8), label)


def make_dataset(out_dir: str | Path, n_train: int = 48, n_test: int = 16, height: int = 64, width: int = 64,
                 seed: int = 0) -> Path:
    """Write a synthetic dataset in the NYU layout and return its root."""
    root = Path(out_dir)
    for sub in ("RGB", "Depth", "Label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{i:05d}" for i in range(n_train + n_test)]
    for name in names:
        rgb, depth, label = render_scene(rng, height, width)
        cv2.imwrite(str(root / "RGB" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(root / "Depth" / f"{name}.png"), depth)
        cv2.imwrite(str(root / "Label" / f"{name}.png"), label)
    lines = [f"RGB/{n}.jpg Label/{n}.png" for n in names]
    (root / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[n_train:]) + "\n")
    return root
