"""Two gloo processes on CPU: SAM under DDP equals one process on the doubled batch (both passes
all-reduced); per-replica perturbation equals its own written-out rule; the rank helpers reduce,
gather and shard correctly."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp
from torch import nn

from shared.distributed import (
    all_gather_concat,
    cleanup_distributed,
    make_dataloader,
    reduce_mean,
    setup_distributed,
    wrap_model_ddp,
)
from shared.optim import build_optimizer
from shared.sam import OptimizationStep
from tests.shared.test_sam import make_bn_free_classifier

STEPS = 2


def full_batch():
    g = torch.Generator().manual_seed(5)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = setup_distributed(device="cpu")
    x, y = full_batch()
    shard = (x.chunk(world_size)[rank], y.chunk(world_size)[rank])
    results = {}
    for per_replica in (False, True):
        model = make_bn_free_classifier()
        ddp = wrap_model_ddp(model, ctx)
        stepper = OptimizationStep(ddp, build_optimizer("sam", model, 1e-2, 0.01),
                                   per_replica_perturbation=per_replica)
        for _ in range(STEPS):
            stepper.step(lambda b, ddp=ddp: nn.functional.cross_entropy(ddp(b[0]), b[1]), [shard])
        if ctx.is_main:
            torch.save(model.state_dict(), os.path.join(out_dir, f"per_replica_{per_replica}.pt"))
    results["mean_rank"] = reduce_mean(float(rank))
    results["gathered"] = all_gather_concat(torch.arange(rank + 1)).tolist()
    loader = make_dataloader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=2, shuffle=True, seed=0)
    results["indices"] = torch.cat([b[0] for b in loader]).tolist()
    eval_loader = make_dataloader(torch.utils.data.TensorDataset(torch.arange(7)), batch_size=2, shuffle=False, seed=0)
    results["eval_indices"] = torch.cat([b[0] for b in eval_loader]).tolist()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    cleanup_distributed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_reference(per_replica: bool) -> nn.Module:
    x, y = full_batch()
    model = make_bn_free_classifier()
    optimizer = build_optimizer("sam", model, 1e-2, 0.01)

    def loss(batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    if not per_replica:
        stepper = OptimizationStep(model, optimizer)
        for _ in range(STEPS):
            stepper.step(loss, [(x, y)])
        return model
    shards = list(zip(x.chunk(2), y.chunk(2)))
    for _ in range(STEPS):  # each replica ascends along its own gradient; descent grads averaged
        grads = []
        for shard in shards:
            optimizer.zero_grad()
            loss(shard).backward()
            optimizer.perturb_weights()
            optimizer.zero_grad()
            loss(shard).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            optimizer.restore_weights()
        for p, g0, g1 in zip(model.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        optimizer.base_optimizer.step()
    return model


def test_ddp_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for per_replica in (False, True):
        got = torch.load(tmp_path / f"per_replica_{per_replica}.pt")
        expected = single_process_reference(per_replica).state_dict()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
    default, per_replica = (torch.load(tmp_path / f"per_replica_{f}.pt") for f in (False, True))
    assert any(not torch.allclose(default[k], per_replica[k]) for k in default)

    assert results[0]["mean_rank"] == results[1]["mean_rank"] == 0.5
    assert results[0]["gathered"] == results[1]["gathered"] == [0, 0, 1]
    shard0, shard1 = set(results[0]["indices"]), set(results[1]["indices"])
    assert not shard0 & shard1 and shard0 | shard1 == set(range(10))
    # evaluation: every sample exactly once over the ranks, no padding repeats
    assert sorted(results[0]["eval_indices"] + results[1]["eval_indices"]) == list(range(7))


def test_epoch_order_depends_only_on_seed_and_epoch():
    from shared.distributed import set_loader_epoch

    def order(epoch, warmup_epochs):
        loader = make_dataloader(torch.utils.data.TensorDataset(torch.arange(12)), batch_size=4, shuffle=True, seed=3)
        for e in range(warmup_epochs):  # iterating earlier epochs must not change this epoch's order
            set_loader_epoch(loader, e)
            list(loader)
        set_loader_epoch(loader, epoch)
        return torch.cat([b[0] for b in loader]).tolist()

    assert order(2, warmup_epochs=0) == order(2, warmup_epochs=2)
    assert order(2, warmup_epochs=0) != order(3, warmup_epochs=0)


def test_epoch_order_does_not_depend_on_workers():
    from shared.distributed import set_loader_epoch

    def orders(num_workers):
        loader = make_dataloader(torch.utils.data.TensorDataset(torch.arange(12)), batch_size=4, shuffle=True,
                                 seed=3, num_workers=num_workers)
        out = []
        for epoch in range(3):
            set_loader_epoch(loader, epoch)
            out.append(torch.cat([b[0] for b in loader]).tolist())
        return out

    assert orders(0) == orders(2)
