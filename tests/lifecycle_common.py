"""What the tools' `tests/<tool>/lifecycle_adapter.py` share: every tool writes one run folder with
its resumable `latest_model.pth` (shared.run / shared.checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

from shared.checkpoint import load_checkpoint


def run_folder(run_root: Path, ignore: tuple[str, ...] = ()) -> Path:
    """The single run folder a fresh run created under `run_root` (folders named in `ignore` aside)."""
    folders = [p for p in Path(run_root).iterdir() if p.is_dir() and p.name not in ignore]
    if len(folders) != 1:
        raise AssertionError(f"{run_root}: expected one run folder, found {sorted(p.name for p in folders)}")
    return folders[0]


def latest_checkpoint(run_folder: Path) -> Path:
    return Path(run_folder) / "latest_model.pth"


def weights(run_folder: Path) -> dict[str, torch.Tensor]:
    return dict(load_checkpoint(latest_checkpoint(run_folder))["model_state_dict"])
