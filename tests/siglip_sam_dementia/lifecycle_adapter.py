"""The run-lifecycle adapter of siglip_sam_dementia for the cross-tool test (tests/test_run_lifecycle_tools.py):
the smallest dataset, the train argv and how to read a run's folder, checkpoint and weights."""

from __future__ import annotations

import warnings
from pathlib import Path

from projects.siglip_sam_dementia.synthetic import make_synthetic_corpus
from projects.siglip_sam_dementia.tiny_model import make_tiny_siglip2
from projects.siglip_sam_dementia.trainer import cli
from tests import lifecycle_common as common

TOOL = "siglip_sam_dementia"
MODEL_FOLDER = "tiny_siglip2"
# 12 English speakers: 4 train (2 steps of 2 per epoch), 4 val, 4 test; tiny spectrograms.
TINY = ["--parser", "English", "--val_fraction", "0.34", "--test_fraction", "0.34", "--batch_size", "2",
        "--n_mels", "32", "--window_seconds", "2.5", "--no_mixed_precision", "--optimizer_type", "sam",
        "--seed", "0"]


def make_data(root: Path) -> Path:
    """<root>/English/metadata.csv + wavs (12 speakers, 4 words each) and a tiny SigLIP2 beside it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_tiny_siglip2(Path(root) / MODEL_FOLDER)
        return make_synthetic_corpus(root, languages=("English",), speakers_per_language=12, words_per_recording=4)


def _argv(data: Path, lr: float, epochs: int) -> list[str]:
    return ["--data_dir", str(data), "--model_name", str(Path(data) / MODEL_FOLDER), "--learning_rate", str(lr),
            "--num_epochs", str(epochs), *TINY]


def train_argv(data: Path, run_root: Path, *, lr: float, epochs: int, resume: Path | None = None) -> list[str]:
    if resume is not None:  # without --output_dir a resume continues in the checkpoint's own folder
        return [*_argv(data, lr, epochs), "--resume", str(resume)]
    return [*_argv(data, lr, epochs), "--output_dir", str(run_root)]


def bad_data_argv(missing: Path, run_root: Path) -> list[str]:
    return [*_argv(missing, 1e-3, 1), "--output_dir", str(run_root)]


def run(argv: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cli(argv)
        except SystemExit as exit_:  # argparse's own exit code
            return int(exit_.code or 0)


run_folder, latest_checkpoint, weights = common.run_folder, common.latest_checkpoint, common.weights
