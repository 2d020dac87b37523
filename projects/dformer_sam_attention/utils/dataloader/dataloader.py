"""Train / evaluation loaders over RGBXDataset, sharded under torchrun (shared.distributed)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from projects.dformer_sam_attention.local_configs.config import SegConfig
from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import RGBXDataset
from shared.distributed import make_dataloader


def get_train_loader(config: SegConfig, skip_bad_samples: bool, seed: int, val_fraction: float = 0.0,
                     batch_size: int | None = None) -> tuple[DataLoader, RGBXDataset]:
    """`batch_size`: per process (default `config.batch_size`)."""
    batch_size = batch_size or config.batch_size
    dataset = RGBXDataset(config, "train", skip_bad_samples=skip_bad_samples, seed=seed, val_fraction=val_fraction)
    loader = make_dataloader(dataset, batch_size, shuffle=True, seed=seed,
                             num_workers=config.num_workers, drop_last=len(dataset) > batch_size)
    return loader, dataset


def get_eval_loader(config: SegConfig, split: str, skip_bad_samples: bool, seed: int, val_fraction: float = 0.0
                    ) -> tuple[DataLoader, RGBXDataset]:
    """Whole images of the "val" (held out of train.txt) or "test" split."""
    dataset = RGBXDataset(config, split, skip_bad_samples=skip_bad_samples, seed=seed, val_fraction=val_fraction)
    loader = make_dataloader(dataset, config.eval_batch_size, shuffle=False, seed=seed,
                             num_workers=config.num_workers)
    return loader, dataset
