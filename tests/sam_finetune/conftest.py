"""Fixtures shared by the sam_finetune tests: generated data in both layouts and a tiny base checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from projects.sam_finetune.modeling.build import build_sam_tiny
from projects.sam_finetune.synthetic import make_coco_dataset, make_directory_dataset
from tests.sam_finetune.helpers import IMAGE_SIZE


@pytest.fixture(scope="session")
def directory_data(tmp_path_factory) -> Path:
    return make_directory_dataset(tmp_path_factory.mktemp("directory"), {"train": 24, "val": 6},
                                  image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="session")
def coco_data(tmp_path_factory) -> Path:
    return make_coco_dataset(tmp_path_factory.mktemp("coco"), {"train": 6, "val": 3}, image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory) -> Path:
    """A random-init tiny SAM saved like Meta's checkpoints (a bare state dict)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("base") / "tiny_sam.pth"
    torch.save(build_sam_tiny(image_size=IMAGE_SIZE).state_dict(), path)
    return path
