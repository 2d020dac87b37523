"""Inference: RGB + depth → colourised label PNG and an overlay on the RGB image.

    python projects/dformer_sam_attention/utils/infer.py --checkpoint runs/x/best_model.pth \
        --rgb scene.jpg --depth scene.png --output_dir predictions/
    (--rgb/--depth may also be folders: files are paired by name)

Our checkpoints carry the model settings, the config and the class text embeddings, so no text
encoder and no config file are needed. A published DFormerv2 checkpoint (official segmentor layout)
carries none of that: name its dataset with `--config` (classes, channel order, normalisation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from projects.dformer_sam_attention.local_configs.config import ConfigError, SegConfig, load_config
from projects.dformer_sam_attention.models.builder import (
    EncoderDecoder,
    settings_from_dict,
    upgrade_state_dict,
)
from projects.dformer_sam_attention.models.official import is_official_segmentor, load_official_segmentor
from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import DatasetError, read_depth, read_rgb
from projects.dformer_sam_attention.utils.dataloader.transforms import normalize_depth, normalize_rgb
from projects.dformer_sam_attention.utils.eval import predict_probabilities
from shared.argtypes import probability
from shared.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state


def load_trained_model(path: str | Path, device: torch.device | str = "cpu",
                       config_name: str | None = None) -> tuple[nn.Module, SegConfig]:
    """A model and its config: rebuilt from a best_model.pth / latest_model.pth of utils/train.py, or,
    for a published DFormerv2 checkpoint, from its shapes and the dataset config `config_name`."""
    payload = load_checkpoint(path)
    if is_official_segmentor(payload):
        if config_name is None:
            raise ConfigError(f"{path}: a published DFormerv2 checkpoint carries no settings; name its dataset "
                              "with --config (e.g. local_configs.NYUDepthv2.DFormerv2_S)")
        config = load_config(config_name)
        model = load_official_segmentor(path, config, payload=payload)
        return model.to(device).eval(), config
    if config_name is not None:
        raise ConfigError(f"--config {config_name}: {path} is a checkpoint of this tool, which carries its own "
                          "config; drop --config")
    if not isinstance(payload, dict) or "model_settings" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: neither a checkpoint written by utils/train.py (no model_settings/config) "
                              "nor a published DFormerv2 segmentor (backbone.* + decode_head.*)")
    config_data = dict(payload["config"])
    for key in ("class_names", "train_scale_array", "norm_mean", "norm_std", "eval_scale_array", "eval_crop_size"):
        config_data[key] = tuple(config_data[key])
    config = SegConfig(**config_data)
    model = EncoderDecoder(settings_from_dict(payload["model_settings"]))
    state = upgrade_state_dict(extract_model_state(payload))  # older checkpoints: today's module names
    load_model_state(model, state, strict=True, source_name=str(path))
    return model.to(device).eval(), config


def palette(num_classes: int) -> np.ndarray:
    """A fixed, distinct RGB colour per class (ignore stays black)."""
    rng = np.random.default_rng(7)
    return rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)


@torch.no_grad()
def predict_label(model: nn.Module, config: SegConfig, rgb: np.ndarray, depth: np.ndarray, device: torch.device,
                  mst: bool = False, sliding: bool = False) -> np.ndarray:
    """rgb (H, W, 3) uint8 RGB, depth (H, W) uint8 → class map (H, W) int64."""
    rgb_t = torch.from_numpy(normalize_rgb(rgb, config.norm_mean, config.norm_std, config.channel_order))[None].to(device)
    depth_t = torch.from_numpy(normalize_depth(depth, config.depth_mean, config.depth_std))[None].to(device)
    scales = tuple(config.eval_scale_array) if mst else (1.0,)
    probs = predict_probabilities(model, rgb_t, depth_t, config.num_classes, scales, mst and config.eval_flip,
                                  sliding, tuple(config.eval_crop_size), config.eval_stride_rate,
                                  official=config.official_recipe)
    return probs.argmax(dim=1)[0].cpu().numpy()


def pair_inputs(rgb: Path, depth: Path) -> list[tuple[Path, Path]]:
    if rgb.is_file():
        if not depth.is_file():
            raise DatasetError(f"{depth}: depth file does not exist")
        return [(rgb, depth)]
    if not rgb.is_dir():
        raise DatasetError(f"{rgb}: neither an image nor a folder")
    pairs = []
    for rgb_path in sorted(p for p in rgb.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        depth_path = depth / f"{rgb_path.stem}.png"
        if not depth_path.is_file():
            raise DatasetError(f"{depth_path}: missing depth map for {rgb_path.name}")
        pairs.append((rgb_path, depth_path))
    if not pairs:
        raise DatasetError(f"{rgb}: no images found")
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Segment RGB-D images with a trained checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint or a published DFormerv2 checkpoint")
    parser.add_argument("--config", default=None, help="dataset config of a published checkpoint")
    parser.add_argument("--rgb", required=True, help="an RGB image or a folder of them")
    parser.add_argument("--depth", required=True, help="the 8-bit depth PNG or a folder (paired by name)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--alpha", type=probability, default=0.5, help="overlay opacity of the label colours, in [0, 1]")
    parser.add_argument("--mst", default=False, action=argparse.BooleanOptionalAction,
                        help="multi-scale + flip")
    parser.add_argument("--sliding", default=False, action=argparse.BooleanOptionalAction,
                        help="sliding-window inference")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_trained_model(args.checkpoint, device, config_name=args.config)
    colours = palette(config.num_classes)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rgb_path, depth_path in pair_inputs(Path(args.rgb), Path(args.depth)):
        rgb, depth = read_rgb(rgb_path), read_depth(depth_path)
        if depth.shape != rgb.shape[:2]:
            raise DatasetError(f"{depth_path}: depth is {depth.shape[1]}×{depth.shape[0]} but "
                               f"{rgb_path.name} is {rgb.shape[1]}×{rgb.shape[0]}")
        label = predict_label(model, config, rgb, depth, device, args.mst, args.sliding)
        coloured = colours[label]
        overlay = (args.alpha * coloured + (1 - args.alpha) * rgb).astype(np.uint8)
        for suffix, image in (("label", coloured), ("overlay", overlay)):
            path = out_dir / f"{rgb_path.stem}_{suffix}.png"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            written.append(path)
        cv2.imwrite(str(out_dir / f"{rgb_path.stem}_classes.png"), label.astype(np.uint8))
    print(f"wrote {len(written)} images to {out_dir}")
    return written


if __name__ == "__main__":
    from projects.dformer_sam_attention.utils.errors import USER_ERRORS
    from shared.cli_errors import run_reporting_errors

    sys.exit(run_reporting_errors(main, USER_ERRORS))
