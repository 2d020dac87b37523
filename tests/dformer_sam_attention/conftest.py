"""Shared fixtures: a tiny random CLIP text model and a small synthetic RGB-D dataset, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from projects.dformer_sam_attention.utils.synthetic_scenes import make_dataset
from projects.dformer_sam_attention.utils.tiny_text_encoder import make_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synthetic") / "nyu", n_train=48, n_test=16, seed=0)


