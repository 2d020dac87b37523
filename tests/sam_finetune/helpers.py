"""Config helpers for the sam_finetune tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

IMAGE_SIZE = 64


def tiny_config(data_dir: Path, output_dir: Path, base: Path | None, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small training config; `sections` update the defaults section by section (one level deep)."""
    config: dict[str, Any] = {
        "model": {"type": "tiny", "checkpoint": str(base) if base else None, "freeze_image_encoder": False,
                  "freeze_prompt_encoder": True, "freeze_mask_decoder": False},
        "data": {"data_dir": str(data_dir), "image_size": IMAGE_SIZE, "batch_size": 4, "prompt_mode": "box",
                 "split_instances": True},
        "finetuning": {"strategy": "full", "adapter": {"bottleneck_dim": 8}},
        "training": {"num_epochs": 1, "learning_rate": 5e-3, "checkpoint_every": 0},
        "output": {"output_dir": str(output_dir), "experiment_name": "run"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path
