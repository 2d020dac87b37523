"""A toy trainer that exercises the whole shared core: optimizer factory (adamw | lion | sam),
`OptimizationStep` (AMP, accumulation, SAM's two passes, BatchNorm bypass), schedules, atomic
checkpoints with mid-epoch resume, DDP sampler wiring and tracking.

    python -m shared.toy_trainer --output_dir runs/toy --optimizer sam --epochs 20
    python -m shared.toy_trainer --output_dir runs/toy --resume runs/toy/latest_model.pth

The problem: two noisy classes in 20 dimensions, a small training set (so a plain MLP overfits,
where SAM's flatter minima should generalise better), a large test set.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm import tqdm

from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError, capture_training_state, save_checkpoint
from shared.cli_errors import run_reporting_errors
from shared.distributed import cleanup_distributed, make_dataloader, set_loader_epoch, setup_distributed
from shared.optim import OPTIMIZERS, SAM_BASES, build_optimizer, build_scheduler, resolve_lr_and_weight_decay
from shared.run import RunError, choose_run_dir, load_resume, open_run
from shared.sam import OptimizationStep
from shared.seeding import seed_everything

INPUT_DIM = 20
# What a resume may change without making it another experiment: the sleep used to interrupt
# a run in tests, and how often it checkpoints. `epochs` may grow (shared.run's default).
RESUME_MAY_CHANGE = ("step_delay", "checkpoint_every")


def make_toy_data(n_train: int, n_test: int, label_noise: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Labels from a fixed random hyperplane through a non-linear feature map; training labels
    flipped with probability `label_noise` (test labels are clean)."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(INPUT_DIM, generator=generator)

    def sample(n: int, noise: float) -> TensorDataset:
        x = torch.randn(n, INPUT_DIM, generator=generator)
        y = ((x @ direction + 0.5 * (x[:, 0] * x[:, 1])) > 0).long()
        flip = torch.rand(n, generator=generator) < noise
        return TensorDataset(x, torch.where(flip, 1 - y, y))

    return sample(n_train, label_noise), sample(n_test, 0.0)


class ToyClassifier(nn.Module):
    def __init__(self, input_dim: int = INPUT_DIM, hidden_dim: int = 128, num_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, C)
        return self.net(x)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=None,
                        help="the run folder (default: runs/toy, or the --resume checkpoint's own folder)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sam")
    parser.add_argument("--sam_base", choices=SAM_BASES, default="adamw")
    parser.add_argument("--sam_rho", type=float, default=0.05)
    parser.add_argument("--sam_adaptive", action="store_true", help="ASAM (use a larger rho, e.g. 1.0-2.0)")
    parser.add_argument("--lr", type=float, default=None, help="default 3e-3 (AdamW), /3 for Lion")
    parser.add_argument("--weight_decay", type=float, default=None, help="default 1e-2 (AdamW), x3 for Lion")
    parser.add_argument("--scheduler", choices=("cosine", "linear", "constant"), default="cosine")
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--n_train", type=int, default=256)
    parser.add_argument("--n_test", type=int, default=2048)
    parser.add_argument("--label_noise", type=float, default=0.2)
    parser.add_argument("--mixed_precision", action="store_true", help="autocast (bf16 on CPU)")
    parser.add_argument("--max_grad_norm", type=float, default=None)
    parser.add_argument("--checkpoint_every", type=int, default=0, help="also save latest_model.pth every N steps")
    parser.add_argument("--step_delay", type=float, default=0.0, help="sleep after each step (to interrupt a run)")
    parser.add_argument("--resume", default=None, help="a latest_model.pth to continue from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch_size % args.gradient_accumulation_steps:
        parser.error("--batch_size must be a multiple of --gradient_accumulation_steps")
    return args


@torch.no_grad()
def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    model.eval()
    x, y = dataset.tensors
    return float((model(x).argmax(1) == y).float().mean())


def train(args: argparse.Namespace) -> dict:
    ctx = setup_distributed(device="cpu")
    seed_everything(args.seed)
    train_set, test_set = make_toy_data(args.n_train, args.n_test, args.label_noise, args.seed)
    loader = make_dataloader(train_set, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    model = ToyClassifier()
    lr, weight_decay = resolve_lr_and_weight_decay(args.optimizer, args.sam_base, args.lr, args.weight_decay,
                                                   adamw_lr=3e-3, adamw_weight_decay=1e-2)
    optimizer = build_optimizer(args.optimizer, model, lr, weight_decay, sam_base=args.sam_base,
                                sam_rho=args.sam_rho, sam_adaptive=args.sam_adaptive)
    steps_per_epoch = len(loader)
    schedule = build_scheduler(optimizer, args.scheduler, total_steps=args.epochs * steps_per_epoch,
                               warmup_steps=args.warmup_steps)
    stepper = OptimizationStep(model, optimizer, AmpPolicy.create("cpu", args.mixed_precision),
                               max_grad_norm=args.max_grad_norm)
    config = {key: value for key, value in vars(args).items() if key not in ("output_dir", "resume")}
    config.update(lr=lr, weight_decay=weight_decay)
    resume = load_resume(args.resume, config, may_change=RESUME_MAY_CHANGE) if args.resume else None
    output_dir = choose_run_dir(resume=resume, output_dir=args.output_dir, root="runs", name="toy")
    start_epoch, step = 0, 0
    if resume is not None:
        state = resume.restore(model=model, optimizer=optimizer, scheduler=schedule, stepper=stepper)
        start_epoch, step = state["epoch"], state["step"]
    tracker = open_run(output_dir, config, resume=resume, is_main=ctx.is_main)

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def save_latest(epoch: int) -> None:
        if ctx.is_main:
            save_checkpoint(output_dir / "latest_model.pth", capture_training_state(
                model=model, optimizer=optimizer, scheduler=schedule, stepper=stepper, epoch=epoch, step=step,
                extra={"config": config}))

    k = args.gradient_accumulation_steps
    for epoch in range(start_epoch, args.epochs):
        model.train()
        set_loader_epoch(loader, epoch)  # a resumed epoch replays its order and skips what it trained on
        done_in_epoch = step - epoch * steps_per_epoch
        progress = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not ctx.is_main)
        for batch_index, (x, y) in enumerate(progress):
            if batch_index < done_in_epoch:
                continue
            micro_batches = list(zip(x.chunk(k), y.chunk(k)))
            lr_used = schedule.get_last_lr()[0]  # the rate this step applies; the schedule then moves on
            result = stepper.step(loss_fn, micro_batches)
            schedule.step_iteration()
            step += 1
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr_used:.2e}")
            tracker.log({"train_loss": result.loss, "lr": lr_used, "epoch": epoch}, step)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save_latest(epoch)
            if args.step_delay:
                time.sleep(args.step_delay)
        schedule.step_epoch()
        train_acc, test_acc = accuracy(model, train_set), accuracy(model, test_set)
        tracker.log({"train_acc": train_acc, "test_acc": test_acc, "epoch": epoch}, step)
        if ctx.is_main:
            print(f"epoch {epoch}: loss {result.loss:.4f} train_acc {train_acc:.3f} test_acc {test_acc:.3f}")
        save_latest(epoch + 1)

    clean_train_set, _ = make_toy_data(args.n_train, 0, 0.0, args.seed)
    summary = {"optimizer": args.optimizer, "train_acc": accuracy(model, train_set),
               "clean_train_acc": accuracy(model, clean_train_set), "test_acc": accuracy(model, test_set)}
    summary["generalization_gap"] = summary["train_acc"] - summary["test_acc"]
    tracker.write_summary(summary)
    tracker.finish()
    if ctx.is_main:
        print(json.dumps(summary))
    cleanup_distributed()
    return summary


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


def cli(argv: list[str] | None = None) -> int:
    """The command line: bad input (a refused resume, a damaged checkpoint) is one line, exit 2."""
    return run_reporting_errors(lambda: main(argv) and None, (RunError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(cli())
