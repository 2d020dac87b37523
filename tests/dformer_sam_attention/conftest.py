"""Shared fixtures: a tiny random CLIP text model and a small synthetic RGB-D dataset, built once."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from projects.dformer_sam_attention.utils.synthetic_scenes import make_dataset
from projects.dformer_sam_attention.utils.tiny_text_encoder import make_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synthetic") / "nyu", n_train=48, n_test=16, seed=0)


@contextlib.contextmanager
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention
    (measured 6× faster under load); restored afterwards for the other tools' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield
