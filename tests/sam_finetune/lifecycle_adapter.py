"""The run-lifecycle adapter of sam_finetune for the cross-tool test (tests/test_run_lifecycle_tools.py):
the smallest dataset, the train argv (a config file written beside run_root) and how to read a run's
folder, checkpoint and weights."""

from __future__ import annotations

from pathlib import Path

from projects.sam_finetune.synthetic import make_directory_dataset
from projects.sam_finetune.train import cli
from tests import lifecycle_common as common
from tests.sam_finetune.helpers import tiny_config, write_config

TOOL = "sam_finetune"
RUN_NAME = "run"


def make_data(root: Path) -> Path:
    """4 training images (2 steps per epoch at batch 2) and 2 validation images of 64 px."""
    return make_directory_dataset(root, {"train": 4, "val": 2}, image_size=64, seed=0)


def _config_path(data: Path, run_root: Path, lr: float, epochs: int) -> Path:
    config = tiny_config(data, run_root, None, data={"batch_size": 2},
                         training={"num_epochs": epochs, "learning_rate": lr, "checkpoint_every": 1})
    config["output"]["experiment_name"] = RUN_NAME
    run_root.parent.mkdir(parents=True, exist_ok=True)
    return write_config(run_root.parent / f"{run_root.name}_lr{lr}_epochs{epochs}.yaml", config)


def train_argv(data: Path, run_root: Path, *, lr: float, epochs: int, resume: Path | None = None) -> list[str]:
    argv = ["--config", str(_config_path(data, run_root, lr, epochs)), "--device", "cpu"]
    return argv + (["--resume", str(resume)] if resume is not None else [])


def bad_data_argv(missing: Path, run_root: Path) -> list[str]:
    return train_argv(missing, run_root, lr=1e-3, epochs=1)


def run(argv: list[str]) -> int:
    return cli(argv)


run_folder, latest_checkpoint, weights = common.run_folder, common.latest_checkpoint, common.weights
