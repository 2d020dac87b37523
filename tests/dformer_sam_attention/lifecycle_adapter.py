"""The tool's side of the cross-tool run-lifecycle test (tests/test_run_lifecycle_tools.py): the tiny
config on 8 synthetic scenes, text guidance on (a tiny CLIP beside the data), one step per epoch."""

from __future__ import annotations

from pathlib import Path

from projects.dformer_sam_attention.utils import train as train_cli
from projects.dformer_sam_attention.utils.synthetic_scenes import make_dataset
from projects.dformer_sam_attention.utils.tiny_text_encoder import make_tiny_clip
from tests import lifecycle_common as common

TOOL = "dformer_sam_attention"
CONFIG = "local_configs.NYUDepthv2.DFormerv2_Tiny"
TEXT_CACHE = "text_cache"  # shared by the runs under a run root, not a run folder


def make_data(root: Path) -> Path:
    """8 train / 2 test scenes at 32×32 (one training step per epoch) and a tiny CLIP beside them."""
    make_tiny_clip(Path(root) / "tiny_clip")
    return make_dataset(Path(root) / "nyu", n_train=8, n_test=2, height=32, width=32, seed=3)


def _argv(data: Path, run_root: Path, lr: float, epochs: int) -> list[str]:
    return ["--config", CONFIG, "--dataset_path", str(data), "--text_encoder", str(Path(data).parent / "tiny_clip"),
            "--checkpoint_dir", str(run_root), "--no-amp", "--lr", str(lr), "--epochs", str(epochs)]


def train_argv(data: Path, run_root: Path, *, lr: float, epochs: int, resume: Path | None = None) -> list[str]:
    return _argv(data, run_root, lr, epochs) + (["--resume", str(resume)] if resume is not None else [])


def bad_data_argv(missing: Path, run_root: Path) -> list[str]:
    return _argv(missing, run_root, 1e-3, 1)


def run(argv: list[str]) -> int:
    return train_cli.cli(argv)


def run_folder(run_root: Path) -> Path:
    return common.run_folder(run_root, ignore=(TEXT_CACHE,))


latest_checkpoint, weights = common.latest_checkpoint, common.weights
