"""torchrun / DDP set-up, rank helpers, metric reductions and sampler wiring.

Every function also works in a plain single process (no torchrun): world size 1, rank 0.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from shared.seeding import seed_worker


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None, backend: str | None = None) -> DistributedContext:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK);
    a single process otherwise. `device`: "cuda" | "cpu" | None (CUDA when available)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), timeout=timedelta(minutes=30))
    return DistributedContext(rank, local_rank, world_size, torch_device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears its group down while another still talks to it
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over all ranks."""
    tensor = torch.as_tensor(value, dtype=torch.float64).clone()
    if is_distributed():
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return float(tensor)


def reduce_sum(value: float | torch.Tensor) -> float:
    tensor = torch.as_tensor(value, dtype=torch.float64).clone()
    if is_distributed():
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
    return float(tensor)


def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the (possibly differently sized) tensors of all ranks, in rank order."""
    if not is_distributed():
        return tensor
    gathered: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, tensor.detach().cpu())
    return torch.cat([t for t in gathered if t is not None]).to(tensor.device)


def gather_objects(items: list) -> list:
    """Every rank's list items (e.g. per-sample evaluation rows), concatenated in rank order, on every rank."""
    if not is_distributed():
        return list(items)
    gathered: list[list | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered if part is not None for item in part]


def broadcast_from_main(obj):
    """Rank 0's value of `obj` on every rank (e.g. the run folder that rank 0 created)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class ShardedEvalSampler(Sampler[int]):
    """Rank r takes samples r, r+W, r+2W, ...: every sample exactly once over all ranks.

    A DistributedSampler pads the last shard with repeated samples so that ranks take equal steps
    (which training under DDP needs); in evaluation those repeats would be counted twice.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int):
        self.indices = list(range(rank, len(dataset), world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_dataloader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                    collate_fn=None, drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A seeded DataLoader that shards across ranks under torchrun: training loaders (`shuffle=True`)
    through a DistributedSampler — also in a single process (one replica), so that each epoch's
    order is drawn from (seed, epoch) alone, whatever the number of workers or where a run resumed —
    and evaluation loaders (`shuffle=False`) without padding, so each sample
    is seen exactly once over all ranks. Ranks may then take unequal numbers of evaluation steps, so
    evaluate the unwrapped module (`unwrap_model`), whose forward runs no DDP collective, and gather
    the results afterwards (`gather_objects`, `all_gather_concat`, torchmetrics' sync)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler: Sampler[int] | None = None
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
    elif world_size > 1:
        sampler = ShardedEvalSampler(dataset, rank, world_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        sampler=sampler, num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
                        pin_memory=pin_memory, worker_init_fn=seed_worker, generator=generator,
                        persistent_workers=num_workers > 0)
    loader.base_seed = seed
    return loader


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Make epoch `epoch`'s order a function of (seed, epoch) alone, so a resumed run replays it.

    The sampler gets `set_epoch` (without it every epoch sees the same order); the loader's
    generator, which seeds non-persistent workers, is reseeded too.
    """
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(getattr(loader, "base_seed", 0) * 1000 + epoch)


def wrap_model_ddp(model: nn.Module, ctx: DistributedContext, find_unused_parameters: bool = False,
                   sync_batchnorm: bool = False) -> nn.Module:
    if not ctx.is_distributed:
        return model
    if sync_batchnorm and ctx.device.type == "cuda":  # SyncBatchNorm has no CPU kernels
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_batchnorm:
        warnings.warn("sync_batchnorm needs CUDA devices; keeping per-process BatchNorm", stacklevel=2)
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)
