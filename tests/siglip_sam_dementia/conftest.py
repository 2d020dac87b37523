"""Shared fixtures: one tiny SigLIP2 and one small synthetic corpus per test session."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from projects.siglip_sam_dementia.synthetic import make_synthetic_corpus
from projects.siglip_sam_dementia.tiny_model import make_tiny_siglip2

# Small enough for seconds per epoch on a 2-core CPU; 2.5 s windows give several windows per recording.
TINY_ARGS = ["--n_mels", "32", "--window_seconds", "2.5", "--batch_size", "8", "--no_mixed_precision",
             "--learning_rate", "2e-3", "--weight_decay", "0.01"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_tiny_siglip2(tmp_path_factory.mktemp("tiny_siglip2"))


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """4 languages x 24 speakers, 8 words each (short recordings)."""
    return make_synthetic_corpus(tmp_path_factory.mktemp("corpus"), speakers_per_language=24, words_per_recording=8)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), sample_rate)
    return path
