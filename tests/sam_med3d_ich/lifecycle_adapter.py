"""The run-lifecycle adapter of sam_med3d_ich for the cross-tool test (tests/test_run_lifecycle_tools.py):
the smallest dataset, the train argv and how to read a run's folder, checkpoint and weights."""

from __future__ import annotations

import warnings
from pathlib import Path

from projects.sam_med3d_ich.synthetic import write_dataset
from projects.sam_med3d_ich.train import cli
from tests import lifecycle_common as common

TOOL = "sam_med3d_ich"
TINY = ["--model_type", "tiny", "--visual_tokens", "8", "--visual_token_dim", "32", "--num_workers", "0",
        "--batch_size", "2", "--num_clicks", "2", "--val_clicks", "1", "--target_spacing", "native",
        "--device", "cpu", "--seed", "0"]


def make_data(root: Path) -> Path:
    """6 patients of 32^3 synthetic CT: about 4 training cases (2 steps per epoch at batch 2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_dataset(root, n_patients=6, shape=(32, 32, 32), seed=0)


def _argv(data: Path, run_root: Path, lr: float, epochs: int) -> list[str]:
    return ["--train_csv", str(data / "train.csv"), "--val_csv", str(data / "val.csv"), "--mask_dir",
            str(data / "masks"), "--output_dir", str(run_root / "run"), "--lr", str(lr), "--epochs", str(epochs), *TINY]


def train_argv(data: Path, run_root: Path, *, lr: float, epochs: int, resume: Path | None = None) -> list[str]:
    argv = _argv(data, run_root, lr, epochs)
    if resume is not None:  # a resume goes back into the checkpoint's folder by itself
        argv = [a for i, a in enumerate(argv) if a != "--output_dir" and argv[i - 1] != "--output_dir"]
        argv += ["--resume", str(resume)]
    return argv


def bad_data_argv(missing: Path, run_root: Path) -> list[str]:
    return _argv(missing, run_root, 1e-3, 1)


def run(argv: list[str]) -> int:
    return cli(argv)


run_folder, latest_checkpoint, weights = common.run_folder, common.latest_checkpoint, common.weights
